#!/usr/bin/env python3
"""What `sentitune distill` buys: students trained on a teacher's probabilities against the same students
trained on the gold labels alone, scored on the 2,000 TweetEval validation tweets; prints one JSON object.

The shared training tweets (../shared/data/tweets/train.csv) are shuffled once (seed 0) and cut into
three disjoint parts: the teacher's labelled tweets, the students' labelled tweets, and tweets whose
labels are dropped (the unlabelled posts a user has plenty of). The teacher is the embedded MiniLM
(6 layers) trained on its part; each student trains for the same number of steps on its labelled part,
either on the gold labels (`train`) or with the teacher's probabilities over its labelled part plus the
unlabelled tweets (`distill`). val.csv picks each run's best validation (as train always does) and
gives the scores, with 95 % bootstrap intervals; the TweetEval test split is not touched.

  python benchmarks/distill_quality.py [--work DIR] [--only NAME ...]    (about 20 minutes on 2 busy CPU cores)
      [--teacher-posts 9600] [--teacher-steps 300] [--labelled-posts 4000] [--unlabelled-posts 12000]
      [--student-steps N] [--threads 1]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
from speedlib import TRAIN_CSV, VAL_CSV, bench_main, log, run_child

SENTITUNE = [sys.executable, "-m", "sentitune", "--quiet"]
TEACHER_POSTS, LABELLED_POSTS, UNLABELLED_POSTS = 9_600, 4_000, 12_000
COMMON = ["--validation-file", str(VAL_CSV), "--train-eval-examples", "0", "--batch-size", "32"]
TEACHER = ["--max-steps", "300", *COMMON]
MINILM3 = ["--keep-layers", "3", "--learning-rate", "1e-4", "--max-steps", "200", *COMMON]
MINILM6 = ["--max-steps", "200", *COMMON]
# MPNet is about 5x MiniLM's work per post: fewer, smaller steps in about the same time
MPNET = ["--student", "embedded:all-mpnet-base-v2", "--pooling", "mean", "--max-steps", "100", "--learning-rate",
         "5e-5", "--validation-file", str(VAL_CSV), "--train-eval-examples", "0", "--batch-size", "16"]  # fmt: skip
DISTILL = ["--alpha", "0.5", "--temperature", "1"]
# name -> (command, its options, what it is)
RUNS = {
    "minilm3-gold": ("train", MINILM3, "MiniLM cut to 3 layers, gold labels of the students' part"),
    "minilm3-distilled": (
        "distill",
        [*MINILM3, *DISTILL],
        "MiniLM cut to 3 layers, the teacher's probabilities (alpha 0.5) over the students' part and the "
        "unlabelled tweets",
    ),
    "minilm6-gold": ("train", MINILM6, "MiniLM, 6 layers, gold labels of the students' part"),
    "minilm6-distilled": ("distill", [*MINILM6, *DISTILL], "MiniLM, 6 layers, distilled as above"),
    "mpnet-distilled": ("distill", [*MPNET, *DISTILL], "embedded all-mpnet-base-v2, distilled as above"),
}


def parts(work: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """The three disjoint parts of the shared training tweets."""
    frame = pd.read_csv(TRAIN_CSV).sample(frac=1, random_state=0).reset_index(drop=True)
    if sum(sizes.values()) > len(frame):
        raise SystemExit(f"the parts ({sizes}) need more than the {len(frame)} shared training tweets")
    cuts = {"teacher": (0, sizes["teacher"])}
    cuts["labelled"] = (sizes["teacher"], sizes["teacher"] + sizes["labelled"])
    cuts["unlabelled"] = (cuts["labelled"][1], cuts["labelled"][1] + sizes["unlabelled"])
    found = {}
    for name, (start, end) in cuts.items():
        found[name] = work / f"{name}.csv"
        part = frame.iloc[start:end]
        (part[["text"]] if name == "unlabelled" else part).to_csv(found[name], index=False)
    return found


def run_once(name: str, cmd: list[str], job: Path) -> Path:
    if not (job / "metrics.json").is_file():
        log(f"{name}: {' '.join(cmd[3:5])} …")
        result = run_child([*cmd, "--job-dir", str(job), "--overwrite"], timeout=7200)
        if result.returncode:
            raise SystemExit(f"{name} failed ({result.returncode}): {result.stderr[-2000:]}")
    return job


def scores(job: Path) -> dict:
    metrics = json.loads((job / "metrics.json").read_text())
    val = metrics["val"]
    row = {k: round(val[k], 4) for k in ("examples", "accuracy", "macro_f1", "macro_recall")}
    row["intervals_95"] = {
        k: [round(x, 4) for x in v]
        for k, v in val["intervals_95"].items()
        if k in ("accuracy", "macro_recall")
    }
    training = metrics["training"]
    row["training"] = {
        "steps": training["steps"],
        "examples": training["examples"],
        "wall_s": training["wall_s"],
        "examples_per_s": training["examples_per_s"],
    }
    run_config = json.loads((job / "run_config.json").read_text())
    row["model"] = {k: run_config["model"][k] for k in ("source", "layers", "hidden_size", "parameters")}
    if "distillation" in run_config:
        d = run_config["distillation"]
        row["distillation"] = {
            "posts": d["posts"],
            "alpha": d["alpha"],
            "temperature": d["temperature"],
            "teacher_scores_from_cache": [t["scores_from_cache"] for t in d["teachers"]],
            "teacher_on_val": d["teacher_scores"].get("val", {}).get("ensemble"),
        }
    return row


def run(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="sentitune-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = {
        "teacher": args.teacher_posts,
        "labelled": args.labelled_posts,
        "unlabelled": args.unlabelled_posts,
    }
    files = parts(work, sizes)
    threads = ["--num-threads", str(args.threads)]
    teacher_options = [*TEACHER, *threads]
    if args.teacher_steps:
        teacher_options[teacher_options.index("--max-steps") + 1] = str(args.teacher_steps)
    teacher = run_once(
        "teacher",
        [*SENTITUNE, "train", "--training-file", str(files["teacher"]), *teacher_options],
        work / "teacher",
    )
    rows = {"teacher": {**scores(teacher), "what": "MiniLM, 6 layers, gold labels of the teacher's part"}}
    for name, (command, options, what) in RUNS.items():
        if args.only and name not in args.only:
            continue
        if args.student_steps:  # the same students trained longer, in folders of their own
            at = options.index("--max-steps") + 1
            options = [*options[:at], str(args.student_steps), *options[at + 1 :]]
            name = f"{name}-{args.student_steps}-steps"
        cmd = [*SENTITUNE, command, "--training-file", str(files["labelled"]), *options, *threads]
        if command == "distill":
            cmd += ["--teacher", str(teacher), "--unlabelled", str(files["unlabelled"])]
            cmd += ["--cache-dir", str(work / "teacher-scores")]
        rows[name] = {**scores(run_once(name, cmd, work / name)), "what": what, "options": options}
    return {
        "benchmark": "distill-quality",
        "data": {
            "teacher_labelled": args.teacher_posts,
            "teacher_steps": int(teacher_options[teacher_options.index("--max-steps") + 1]),
            "student_labelled": args.labelled_posts,
            "unlabelled": args.unlabelled_posts,
            "threads": args.threads,
            "scored_on": str(VAL_CSV.name),
            "note": "val.csv also picks each run's best validation step, as train does",
        },
        "runs": rows,
        "work": str(work),
    }


def add_arguments(ap) -> None:
    ap.add_argument("--work", help="folder of the runs (default: a temporary one); a finished run is reused")
    ap.add_argument("--only", nargs="+", choices=sorted(RUNS), help="students to run (default: all)")
    ap.add_argument("--student-steps", type=int, help="train the students this many steps instead")
    ap.add_argument("--teacher-posts", type=int, default=TEACHER_POSTS, help="labelled tweets of the teacher")
    ap.add_argument("--teacher-steps", type=int, help="train the teacher this many steps (default 300)")
    ap.add_argument(
        "--labelled-posts", type=int, default=LABELLED_POSTS, help="labelled tweets of the students"
    )
    ap.add_argument(
        "--unlabelled-posts", type=int, default=UNLABELLED_POSTS, help="tweets with labels dropped"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (1: steady on 2 cores shared with other work, ../shared/NOTES.md)",
    )


if __name__ == "__main__":
    raise SystemExit(bench_main(__doc__, add_arguments, run))
