"""The quality runner in benchmarks/: its stratified training subsets and its parallel, resumable grid."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import TWEETS, require_shared, train_tiny

import sentitune

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
quality = importlib.import_module("quality")


def test_half_data_is_a_stratified_half_of_train_with_the_same_eval_splits(prepared, tmp_path):
    data = Path(shutil.copytree(prepared, tmp_path / "data"))
    options = quality.subset_files(data, 0.5)
    flags = dict(zip(options[::2], options[1::2], strict=True))
    assert flags["--validation-file"] == str(data / "eval.csv")
    assert flags["--testing-file"] == str(data / "test.csv")
    train = pd.read_csv(data / "train.csv")
    half = pd.read_csv(flags["--training-file"])
    full_counts = train["label"].value_counts()
    half_counts = half["label"].value_counts()
    assert set(half_counts.index) == set(full_counts.index)
    for label, n in full_counts.items():
        assert abs(half_counts[label] - n / 2) <= 1, label
    # rows of the training split only, none repeated
    assert not half.duplicated().any()
    assert len(half.merge(train, how="inner")) == len(half)
    # a second call reuses the sample (a resumed grid trains on the same rows)
    written = Path(flags["--training-file"]).stat().st_mtime_ns
    assert quality.subset_files(data, 0.5) == options
    assert Path(flags["--training-file"]).stat().st_mtime_ns == written


def test_smoke_grid_trains_two_settings_at_once_and_a_rerun_skips_them(tmp_path):
    require_shared(TWEETS)
    env = {**os.environ, "SENTITUNE_SHARED": str(TWEETS.parents[2])}
    command = [
        sys.executable,
        str(BENCHMARKS / "quality.py"),
        "--grid",
        "smoke",
        "--jobs",
        "2",
        "--work",
        str(tmp_path),
    ]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    report = json.loads(first.stdout)
    assert report["jobs"] == 2
    assert [r["setting"] for r in report["results"]] == list(quality.GRIDS["smoke"])
    for row in report["results"]:
        assert 0 < row["val_accuracy"] <= 100
        assert (tmp_path / row["setting"] / "model.safetensors").is_file()
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert second.stderr.count("done earlier") == 2
    assert json.loads(second.stdout)["results"] == report["results"]


def test_python_dash_m_runs_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "sentitune", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith(sentitune.__version__)


def test_vader_errors_counts_each_runs_errors_by_band_of_the_score(tmp_path, tiny_model, tweets):
    from sentitune.cli import main

    tweets[["text"]].to_csv(tmp_path / "posts.csv", index=False)
    assert (
        main(
            [
                "prepare",
                str(tmp_path / "posts.csv"),
                "--label-with",
                "vader",
                "--output-dir",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    run = train_tiny(tmp_path / "run", tiny_model, tmp_path / "data")
    test = tmp_path / "data" / "test.csv"
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vader_errors.py"), "--data", str(test), "--runs", str(run)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(out.stdout)["runs"]["run"]
    split = pd.read_csv(test)
    assert sum(b["posts"] for b in found["bands"].values()) == len(split)
    assert sum(b["errors"] for b in found["bands"].values()) == found["errors"]
    assert found["bands"]["exactly 0"]["posts"] == int((split["score"] == 0).sum())
    from sentitune.scoring import Predictor

    predictor = Predictor(str(run), device="cpu")
    predicted = [predictor.labels[i] for i in predictor.probabilities(split["text"].tolist()).argmax(1)]
    assert found["errors"] == int((split["label"] != predicted).sum())
    assert set(found["errors_where_label_changed_by"]) == set(json.loads(out.stdout)["label_changed_by"])


def test_vader_errors_finds_the_posts_whose_vader_label_a_rewrite_hides():
    import vader_errors

    from sentitune.labels import LABELS, score_to_class, vader_scores

    texts = pd.Series(
        [
            "@united the flight left on time",  # VADER reads "united" (positive); @user reads as nothing
            "@user the flight left on time",
            "a goooood day",  # VADER knows no "goooood"; cut to "good" it is positive
            "a GOOD movie, a bad ending",  # capitals weigh GOOD above bad; lower case tips it negative
        ]
    )
    labels = pd.Series(LABELS).to_numpy()[score_to_class(vader_scores(texts).astype(float).to_numpy(), 0.0)]
    changed = {
        name: found.tolist() for name, found in vader_errors.hidden_by_normalisation(texts, labels).items()
    }
    assert changed == {
        "mention names to @user": [True, False, False, False],
        "links to http": [False, False, False, False],
        "elongations cut to two letters": [False, False, True, False],
        "capitals (an uncased vocabulary)": [False, False, False, True],
        "any of these": [True, False, True, True],
    }


def test_the_labelling_loop_summary_reads_the_target_on_the_mean_of_the_seeds(tmp_path):
    def run(seed, margin, random):
        curves = {
            name: [{"labels": 200 * (i + 1), "macro_recall": r} for i, r in enumerate(recalls)]
            for name, recalls in (("margin", margin), ("random", random))
        }
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"settings": {"seed": seed, "pool_size": 3000}, "commit": "c", "date": "d",
                                    "machine": {"cpu": "x"}, "curves": curves}))  # fmt: skip
        return str(path)

    # seed 0 alone misses (0.60 < 0.64 at 400 labels), seed 1 alone meets it; their mean meets it
    paths = [run(0, [0.5, 0.60, 0.66, 0.70], [0.5, 0.55, 0.60, 0.64]),
             run(1, [0.5, 0.70, 0.70, 0.70], [0.5, 0.55, 0.60, 0.62])]  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "active_learning.py"), "--summarise", *paths],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert [p["macro_recall"] for p in summary["mean_curves"]["margin"]] == [0.5, 0.65, 0.68, 0.7]
    assert summary["target_on_means"] == {"random_final_labels": 800, "random_final_macro_recall": 0.63,
                                          "select_labels_to_reach_it": 400, "met": True,
                                          "per_strategy": {"margin": {"select_labels_to_reach_it": 400,
                                                                      "met": True}}}  # fmt: skip
    assert [t["met"] for t in summary["target_per_seed"]] == [False, True]

    # another arm, run later on its own (--strategies) for each seed, joins its seed's curves
    for seed, recalls in ((0, [0.5, 0.52, 0.58, 0.66]), (1, [0.5, 0.56, 0.62, 0.64])):
        curves = {
            "representative": [{"labels": 200 * (i + 1), "macro_recall": r} for i, r in enumerate(recalls)]
        }
        path = tmp_path / f"representative{seed}.json"
        path.write_text(json.dumps({"settings": {"seed": seed, "pool_size": 3000}, "commit": "e", "date": "d",
                                    "machine": {"cpu": "x"}, "curves": curves}))  # fmt: skip
        paths.append(str(path))
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "active_learning.py"), "--summarise", *paths],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert set(summary["mean_curves"]) == {"margin", "random", "representative"}
    assert [p["macro_recall"] for p in summary["mean_curves"]["representative"]] == [0.5, 0.54, 0.6, 0.65]
    assert summary["target_on_means"]["per_strategy"]["representative"] == {
        "select_labels_to_reach_it": 800, "met": False}  # fmt: skip
    assert [r["commit"] for r in summary["runs"]] == ["c", "c", "e", "e"]


def test_the_serving_summary_takes_medians_per_server_backend_and_posts_per_request(tmp_path):
    def result(rounds_1, rounds_8):
        def rounds(pairs):
            return [
                {"offline_posts_per_s": o, "served_posts_per_s": s, "ratio": round(s / o, 3)}
                for o, s in pairs
            ]

        return {
            "served_against_offline": {
                "torch": {"posts_per_request": {"1": rounds(rounds_1), "8": rounds(rounds_8)}}
            }
        }

    several = tmp_path / "several.json"
    several.write_text(json.dumps({"runs": [
        {"server": "before", "result": result([(1000, 500), (1000, 600)], [(1000, 800)])},
        {"server": "before", "result": result([(1000, 700)], [(1000, 900)])},
    ]}))  # fmt: skip
    one = tmp_path / "alone.json"
    one.write_text(json.dumps(result([(1000, 400)], [(2000, 1000)])))
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "serve_load.py"), "--summarise", str(several), str(one)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    points = {(p["server"], p["posts_per_request"]): p for p in json.loads(out.stdout)["points"]}
    assert points["before", 1]["rounds"] == 3 and points["before", 1]["median_served_posts_per_s"] == 600
    assert points["before", 1]["ratio_range"] == [0.5, 0.7]
    assert points["before", 8]["median_ratio"] == 0.85
    assert points["alone", 8]["median_ratio"] == 0.5 and points["alone", 1]["rounds"] == 1


def small_shared(tmp_path, tweets) -> dict:
    """An environment whose SENTITUNE_SHARED holds ~300 real tweets as train.csv and val.csv."""
    folder = tmp_path / "shared" / "data" / "tweets"
    folder.mkdir(parents=True)
    tweets.to_csv(folder / "train.csv", index=False)
    tweets.to_csv(folder / "val.csv", index=False)
    return {**os.environ, "SENTITUNE_SHARED": str(tmp_path / "shared")}


def test_the_profile_scripts_run_against_the_code_they_profile(tmp_path, tweets):
    """profile_train.py and profile_predict.py reach into sentitune's internals (the splits, the fit loop,
    the Predictor's stages): run end to end on a few steps, they fail when those move."""
    env = small_shared(tmp_path, tweets)
    common = {"env": env, "capture_output": True, "text": True, "cwd": tmp_path}
    train = subprocess.run(
        [sys.executable, str(BENCHMARKS / "profile_train.py"), "--model", "tiny", "--batch-size", "16",
         "--steps", "2", "--rounds", "1", "--top", "3", "--variants", "baseline,no_clip"],
        **common,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    found = json.loads(train.stdout)
    assert found["profile"]["steps"] == 2 and found["profile"]["wall_ms_per_step"] > 0
    assert set(found["ablations"]["ms_per_step"]) == {"baseline", "no_clip"}
    predict = subprocess.run(
        [sys.executable, str(BENCHMARKS / "profile_predict.py"), "--model", "tiny", "--batch-size", "32",
         "--rounds", "1", "--passes", "1", "--top", "3"],
        **common,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-2000:]
    found = json.loads(predict.stdout)
    assert found["config"]["examples"] == len(tweets)
    assert found["sentitune_seconds"]["model"] > 0 and found["trainer_seconds"]["evaluate"] > 0


def test_pass_plans_replays_a_servers_passes_padded_and_packed(tmp_path, tweets, trained_run):
    """pass_plans.py plans passes with the server's own cutting and runs both paths of the Predictor."""
    env = small_shared(tmp_path, tweets)
    found = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pass_plans.py"), "--run", str(trained_run), "--rounds", "1"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    plans = json.loads(found.stdout)["plans"]
    assert set(plans) == {
        "sorted64",
        "random32-1024",
        "random32-512",
        "random32-0",
        "random64-0",
        "random16-0",
    }
    for plan in plans.values():
        assert plan["packed"]["median"] > 0 and plan["padded"]["median"] > 0
        assert plan["packed"]["tokens_run_per_token"] == 1.0  # packed runs the posts' own tokens only
        assert plan["padded"]["tokens_run_per_token"] > 1.0
