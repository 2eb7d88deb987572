"""`sentitune select` on the session's tiny run: the CSV and Label Studio outputs, what is never selected
(duplicates, near-duplicates, posts already labelled), the choosing itself (uncertainty, classes,
clusters), and the labelling loop round trip: select -> label -> prepare -> train."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import cli, cli_error, read_splits, train_tiny

from sentitune import LABELS, __version__
from sentitune.config import SelectConfig
from sentitune.scoring import Predictor
from sentitune.select import class_quotas, kmeans, pool_quotas, select, uncertainty


@pytest.fixture()
def pool(tmp_path, tweets):
    """Real tweets without their labels, as a pool file; and their gold labels by text."""
    tweets[["text"]].to_csv(tmp_path / "pool.csv", index=False)
    return tmp_path / "pool.csv", dict(zip(tweets["text"], tweets["label"], strict=True))


def test_csv_output_holds_the_models_label_and_scores_and_an_empty_label_column(
    trained_run, pool, tmp_path, capsys
):
    path, _ = pool
    code, out, err = cli(
        capsys, "select", trained_run, "--pool", path, "--n", "30", "--output-dir", tmp_path / "out"
    )
    assert code == 0, err
    got = pd.read_csv(tmp_path / "out" / "selected.csv", dtype=str, keep_default_na=False)
    classes = ["negative", "neutral", "positive"]
    carried = ["model_run", "model_val_recall", "model_human_train"]
    assert list(got.columns) == ["text", "model_label", *(f"score_{c}" for c in classes), *carried, "label"]
    assert len(got) == 30 and got["text"].is_unique and (got["label"] == "").all()
    scores = got[[f"score_{c}" for c in classes]].astype(float).to_numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert (got["model_label"] == np.asarray(classes)[scores.argmax(axis=1)]).all()
    # the scores are the run's calibrated probabilities, as predict gives them
    again = Predictor(str(trained_run)).probabilities(got["text"].tolist())
    np.testing.assert_allclose(scores, again, atol=1e-4)
    # where every post came from: the run, its validation macro-recall, its training posts (all people's)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    trained_on = json.loads((trained_run / "run_config.json").read_text())["data"]["train"]["examples"]
    assert (got["model_run"] == "run").all() and (got["model_human_train"] == str(trained_on)).all()
    assert got["model_val_recall"].astype(float).tolist() == [round(metrics["val"]["macro_recall"], 6)] * 30
    summary = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert summary["carried"] == {
        "model_run": "run",
        "model_val_recall": round(metrics["val"]["macro_recall"], 6),
        "model_human_train": trained_on,
    }
    assert summary["selected"] == 30 and summary["posts_read"] == len(pd.read_csv(path))
    assert sum(summary["selected_by_predicted_class"].values()) == 30
    assert f"selected 30 of {summary['posts_left']} posts by margin" in out


def test_label_studio_output_is_tasks_with_a_pre_annotation_and_a_config_of_the_runs_labels(
    trained_run, pool, tmp_path, capsys
):
    path, _ = pool
    code, _, err = cli(
        capsys, "select", trained_run, "--pool", path, "--n", "12", "--format", "label-studio",
        "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "out" / "selected.csv").exists()
    config = ET.fromstring((tmp_path / "out" / "label_config.xml").read_text())
    text = config.find("Text")
    choices = config.find("Choices")
    assert (text.get("name"), text.get("value")) == ("text", "$text")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == (
        "sentiment",
        "text",
        "single",
    )
    assert [c.get("value") for c in choices.findall("Choice")] == ["negative", "neutral", "positive"]
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert len(tasks) == 12
    probs = Predictor(str(trained_run)).probabilities([t["data"]["text"] for t in tasks])
    carried = json.loads((tmp_path / "out" / "selection.json").read_text())["carried"]
    assert carried["model_run"] == "run" and carried["model_human_train"] > 0
    for task, p in zip(tasks, probs, strict=True):
        assert set(task) == {"data", "predictions"}
        model_label = ["negative", "neutral", "positive"][int(p.argmax())]
        assert task["data"] == {"text": task["data"]["text"], "model_label": model_label, **carried}
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == f"sentitune {__version__}: run"
        assert prediction["score"] == pytest.approx(p.max(), abs=1e-4)
        (result,) = prediction["result"]
        assert {k: result[k] for k in ("from_name", "to_name", "type")} == {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
        }
        assert result["value"] == {"choices": [["negative", "neutral", "positive"][int(p.argmax())]]}


def test_duplicates_near_duplicates_and_labelled_posts_are_never_selected(
    trained_run, corpus, tmp_path, capsys, caplog
):
    texts = corpus["text"].tolist()
    pool = [*texts[:40], texts[0], texts[1].upper() + "   ", f"{texts[2]} http://t.co/x1"]
    pd.DataFrame({"text": pool}).to_csv(tmp_path / "pool.csv", index=False)
    pd.DataFrame({"text": texts[:10], "label": "positive"}).to_csv(tmp_path / "labelled.csv", index=False)
    tasks = [{"data": {"text": t}, "predictions": []} for t in texts[10:15]]  # sent to Label Studio earlier
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    code, out, err = cli(
        capsys, "select", trained_run, "--pool", tmp_path / "pool.csv", "--n", "100",
        "--labelled", tmp_path / "labelled.csv", tmp_path / "tasks.json", "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    got = pd.read_csv(tmp_path / "out" / "selected.csv")
    assert sorted(got["text"]) == sorted(texts[15:40])  # n larger than what is left: all of it
    summary = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert (summary["duplicates"], summary["near_duplicates"], summary["already_labelled"]) == (1, 2, 15)
    assert "the pool holds 25 new posts, fewer than --n 100: all of them are selected" in caplog.text


def test_an_empty_pool_or_one_already_labelled_is_one_line_error(trained_run, corpus, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("text\n")
    message = cli_error(
        capsys, "select", trained_run, "--pool", tmp_path / "empty.csv", "--output-dir", tmp_path / "o"
    )
    assert message == (
        f"no posts to select from: {tmp_path}/empty.csv holds 0 rows, 0 of them empty; pass files of posts with --pool"
    )
    corpus[["text"]].head(5).to_csv(tmp_path / "pool.csv", index=False)
    message = cli_error(
        capsys, "select", trained_run, "--pool", tmp_path / "pool.csv", "--labelled", tmp_path / "pool.csv",
        "--output-dir", tmp_path / "o",
    )  # fmt: skip
    assert message == (
        "no posts left to select: the pool holds 5 posts, 5 of them already labelled; pass a --pool with "
        "unlabelled posts"
    )
    assert not (tmp_path / "o").exists()


def test_margin_picks_uncertain_posts_and_random_is_a_seeded_sample(trained_run, pool, tmp_path):
    path, _ = pool
    picked = {}
    for strategy, seed in (("margin", 1), ("entropy", 1), ("random", 1), ("random", 2)):
        out = tmp_path / f"{strategy}-{seed}"
        select(
            SelectConfig(
                run_dir=str(trained_run),
                pool=[str(path)],
                n=20,
                strategy=strategy,
                seed=seed,
                output_dir=str(out),
            )
        )
        picked[strategy, seed] = pd.read_csv(out / "selected.csv")["text"].tolist()
    everything = pd.read_csv(path)["text"].tolist()
    probs = Predictor(str(trained_run)).probabilities(everything)
    margin = dict(zip(everything, uncertainty(probs, "margin"), strict=True))
    chosen = [margin[t] for t in picked["margin", 1]]
    assert chosen == sorted(chosen, reverse=True)  # most uncertain first
    assert np.mean(chosen) > np.quantile(list(margin.values()), 0.75)
    assert picked["random", 1] != picked["random", 2]
    again = tmp_path / "again"
    select(
        SelectConfig(
            run_dir=str(trained_run), pool=[str(path)], n=20, strategy="random", seed=1, output_dir=str(again)
        )
    )
    assert pd.read_csv(again / "selected.csv")["text"].tolist() == picked["random", 1]


def test_uncertainty_class_shares_and_clusters():
    probs = np.array([[0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.5, 0.5, 0.0]])
    assert uncertainty(probs, "margin").argmax() in (0, 2) and uncertainty(probs, "margin")[
        1
    ] == pytest.approx(0.15)
    assert uncertainty(probs, "entropy").argmax() == 0
    assert class_quotas(np.array([100, 3, 50]), 30) == [
        14,
        3,
        13,
    ]  # equal shares, what a class lacks to others
    assert class_quotas(np.array([2, 1, 0]), 10) == [2, 1, 0]
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    points = np.concatenate([c + rng.normal(0, 0.1, (20, 3)) for c in centres])
    groups = kmeans(points, 3, np.random.default_rng(1))
    assert sorted(len(set(groups[i * 20 : (i + 1) * 20])) for i in range(3)) == [1, 1, 1]
    assert len(set(groups)) == 3


def test_select_needs_the_output_folder_to_be_its_own(trained_run, pool, prepared, tmp_path, capsys):
    path, _ = pool
    args = ["select", trained_run, "--pool", path, "--n", "3", "--output-dir", tmp_path / "out"]
    assert cli(capsys, *args)[0] == 0
    message = cli_error(capsys, *args)
    assert message.startswith(f"{tmp_path}/out already holds selected posts (")
    assert cli(capsys, *args, "--overwrite")[0] == 0


# ----------------------------------------------------------------------------- the loop, round trip


def test_round_trip_csv_select_label_prepare_train(trained_run, tiny_model, tweets, pool, tmp_path, capsys):
    path, gold = pool
    start = tweets.head(150)[["text", "label"]]
    start.to_csv(tmp_path / "labelled.csv", index=False)
    code, _, err = cli(
        capsys, "select", trained_run, "--pool", path, "--labelled", tmp_path / "labelled.csv", "--n", "60",
        "--output-dir", tmp_path / "round1",
    )  # fmt: skip
    assert code == 0, err
    picked = pd.read_csv(tmp_path / "round1" / "selected.csv", dtype=str, keep_default_na=False)
    assert not set(picked["text"]) & set(start["text"])
    picked["label"] = picked["text"].map(gold)  # the person fills the label column
    picked.to_csv(tmp_path / "round1" / "selected.csv", index=False)
    code, _, err = cli(
        capsys, "prepare", tmp_path / "labelled.csv", tmp_path / "round1" / "selected.csv", "--output-dir",
        tmp_path / "data",
    )  # fmt: skip
    assert code == 0, err
    rows = read_splits(tmp_path / "data").set_index("text")["label"]
    assert len(rows) == 210 and (rows[picked["text"]] == picked["label"].to_numpy()).all()
    run = train_tiny(tmp_path / "run", tiny_model, tmp_path / "data", max_steps=2)
    assert "macro_recall" in json.loads((run / "metrics.json").read_text())["test"]


def test_a_filled_selection_beside_vaders_labels_keeps_peoples_labels(trained_run, pool, tmp_path, capsys):
    path, gold = pool
    out = tmp_path / "round1"
    select(SelectConfig(run_dir=str(trained_run), pool=[str(path)], n=40, output_dir=str(out)))
    picked = pd.read_csv(out / "selected.csv", dtype=str, keep_default_na=False)
    picked.loc[:29, "label"] = picked["text"][:30].map(gold)  # 30 labelled, 10 left empty
    picked.to_csv(out / "selected.csv", index=False)
    code, _, err = cli(
        capsys,
        "prepare",
        path,
        out / "selected.csv",
        "--label-with",
        "vader",
        "--output-dir",
        tmp_path / "data",
    )
    assert code == 0, err
    got = read_splits(tmp_path / "data").set_index("text")
    people = picked["text"][:30]
    assert (got.loc[people, "label_source"] == "human").all()
    assert (got.loc[people, "label"] == picked["label"][:30].to_numpy()).all()
    assert (
        got.loc[picked["text"][30:], "label_source"] == "vader"
    ).all()  # unlabelled: VADER's, from the pool
    assert (got["label_source"] == "human").sum() == 30


def test_a_filled_selection_gives_prepare_the_round_of_the_run_that_chose_it(
    trained_run, tweets, pool, tmp_path, capsys
):
    path, _ = pool
    select(SelectConfig(run_dir=str(trained_run), pool=[str(path)], n=40, output_dir=str(tmp_path / "round")))
    picked = pd.read_csv(tmp_path / "round" / "selected.csv", dtype=str, keep_default_na=False)
    other = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    agrees = np.arange(len(picked)) % 3 != 0  # the person agrees with the model, or not
    picked["label"] = np.where(agrees, picked["model_label"], picked["model_label"].map(other))
    picked.loc[34:, "label"] = ""  # not labelled
    # two rounds: the second file's posts as chosen by another run, one of them carrying another recall
    first, second = picked.iloc[:20].copy(), picked.iloc[20:].copy()
    second["model_run"], second["model_val_recall"], second["model_human_train"] = "run2", "0.5", "140"
    second.iloc[3, second.columns.get_loc("model_val_recall")] = "0.75"
    first.to_csv(tmp_path / "first.csv", index=False)
    second.to_csv(tmp_path / "second.csv", index=False)
    tweets.tail(60)[["text", "label"]].to_csv(tmp_path / "by-hand.csv", index=False)  # no model_run
    code, _, err = cli(
        capsys, "prepare", tmp_path / "second.csv", tmp_path / "by-hand.csv", tmp_path / "first.csv",
        "--output-dir", tmp_path / "data",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    rounds = report["labelling_rounds"]
    assert [r["run"] for r in rounds] == ["run2", "run"]  # in the order the inputs were given
    for entry, written in zip(rounds, (second, first), strict=True):
        labelled = written[written["label"] != ""]
        agreed = int((labelled["label"] == labelled["model_label"]).sum())
        assert 0 < agreed < len(labelled)
        assert (entry["labels_by_people"], entry["agreed"]) == (len(labelled), agreed)
        assert entry["agreement"] == round(agreed / len(labelled), 4)
        for c in ("negative", "neutral", "positive"):
            both = ((labelled["label"] == c) & (labelled["model_label"] == c)).sum()
            assert entry["per_class"][c] == {
                "people": (labelled["label"] == c).sum(),
                "model": (labelled["model_label"] == c).sum(),
                "agreed": both,
            }
        assert entry["val_macro_recall"] == float(written["model_val_recall"].iloc[0])
        assert entry["people_labelled_training_posts"] == int(written["model_human_train"].iloc[0])
    assert "inconsistent" not in rounds[1]
    assert rounds[0]["inconsistent"] == {"model_val_recall": [0.5, 0.75]}
    assert rounds[0]["note"] == (
        "the posts of run2 carry different model_val_recall values; the first one read is kept"
    )


def test_a_hand_written_labelled_csv_prepares_as_before_with_no_rounds(tweets, tmp_path, capsys):
    written = tweets.head(80)[["text", "label"]].assign(model_label="neutral")  # no model_run: no round
    written.to_csv(tmp_path / "labelled.csv", index=False)
    code, _, err = cli(capsys, "prepare", tmp_path / "labelled.csv", "--output-dir", tmp_path / "data")
    assert code == 0, err
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert "labelling_rounds" not in report
    assert report["columns"] == [{"path": str(tmp_path / "labelled.csv"), "text": "text", "label": "label"}]
    rows = read_splits(tmp_path / "data").set_index("text")["label"]
    assert rows.to_dict() == dict(zip(written["text"], written["label"], strict=True))
    assert "model_label" not in rows.index.names and report["label_sources"]["human"] == 80


def test_pool_shares_the_default_follow_how_often_the_run_predicts_each_class(trained_run, pool, tmp_path):
    assert pool_quotas(np.array([1000, 15000, 4000]), 200) == [10, 150, 40]
    assert pool_quotas(np.array([5, 100, 0]), 10) == [1, 9, 0]  # a class predicted at all gets one
    assert pool_quotas(np.array([3000, 0, 0]), 200) == [200, 0, 0]
    assert sum(pool_quotas(np.array([7, 11, 13]), 31)) == 31
    path, _ = pool
    out = tmp_path / "pool"
    select(SelectConfig(str(trained_run), [str(path)], 30, output_dir=str(out)))  # the default
    summary = json.loads((out / "selection.json").read_text())
    assert summary["class_shares"] == "pool"
    probs = Predictor(str(trained_run)).probabilities(pd.read_csv(path)["text"].tolist())
    expected = pool_quotas(np.bincount(probs.argmax(axis=1), minlength=3), 30)
    got = [summary["selected_by_predicted_class"][name] for name in LABELS]
    assert sum(got) == 30 and np.abs(np.array(got) - expected).max() <= 1  # bf16 scores of other batches
    select(SelectConfig(str(trained_run), [str(path)], 30, class_shares="equal", output_dir=str(out / "eq")))
    summary = json.loads((out / "eq" / "selection.json").read_text())
    expected = class_quotas(np.bincount(probs.argmax(axis=1), minlength=3), 30)
    got = [summary["selected_by_predicted_class"][name] for name in LABELS]
    assert summary["class_shares"] == "equal" and sum(got) == 30
    assert np.abs(np.array(got) - expected).max() <= 1


def test_a_run_that_ended_with_a_warning_repeats_it_when_it_selects(trained_run, pool, tmp_path, caplog):
    import shutil

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    metrics = json.loads((run / "metrics.json").read_text())
    said = "the model gives neutral to 30 of the 30 validation posts, 9 of which are neutral (...)"
    (run / "metrics.json").write_text(json.dumps({**metrics, "warnings": [said]}))
    path, _ = pool
    select(SelectConfig(str(run), [str(path)], 10, output_dir=str(tmp_path / "out")))
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{run} ended its training with a warning, so its picks may teach little: {said}"
    ]
