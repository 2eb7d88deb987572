"""--soft-targets: training on the score a label was read from (VADER's compound score, a score column),
not only its class. prepare keeps the score beside the label and records the class boundaries; train
turns them into target distributions and the loss reads those."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import cli, cli_error, train_tiny

from sentitune import LABELS
from sentitune.config import TrainConfig
from sentitune.labels import score_to_class, soft_targets, vader_scores


@pytest.mark.fast
def test_a_post_near_a_class_boundary_shares_its_target_with_the_class_across_it():
    # the sign rule without a band: neutral is the single score 0 and keeps its whole target
    scores = np.array([-0.5, -0.1, 0.0, 0.1, 0.02, 0.9])
    labels = score_to_class(scores, 0.0).astype(np.int64)
    assert labels.tolist() == [0, 0, 1, 2, 2, 2]
    given = soft_targets(scores, labels, (0.0, 0.0), 0.1, 3)

    def shared(d):
        return 0.5 * math.exp(-d / 0.1)

    expected = [
        [1 - shared(0.5), shared(0.5), 0],
        [1 - shared(0.1), shared(0.1), 0],
        [0, 1, 0],
        [0, shared(0.1), 1 - shared(0.1)],
        [0, shared(0.02), 1 - shared(0.02)],
        [0, shared(0.9), 1 - shared(0.9)],
    ]
    np.testing.assert_allclose(given, expected, rtol=1e-6, atol=1e-7)
    assert (given.argmax(1) == labels).all()
    np.testing.assert_array_equal(soft_targets(scores, labels, (0.0, 0.0), 0.0, 3), np.eye(3)[labels])

    # five classes through four thresholds: the nearer boundary decides the neighbour; on a boundary
    # the post is half its class, half the next
    thresholds = (-0.6, -0.2, 0.2, 0.6)
    scores = np.array([-0.9, -0.5, -0.25, -0.2, 0.55])
    labels = score_to_class(scores, 0.0, thresholds).astype(np.int64)
    assert labels.tolist() == [0, 1, 1, 1, 3]
    given = soft_targets(scores, labels, thresholds, 0.2, 5)
    np.testing.assert_allclose(given.sum(1), 1.0, rtol=1e-6)
    assert given[0, 1] == pytest.approx(0.5 * math.exp(-0.3 / 0.2)) and given[0, 2:].sum() == 0
    assert given[1, 0] == pytest.approx(0.5 * math.exp(-0.1 / 0.2)) and given[1, 2] == 0  # -0.6 is nearer
    assert given[2, 2] == pytest.approx(0.5 * math.exp(-0.05 / 0.2)) and given[2, 0] == 0  # -0.2 is nearer
    assert given[3, 1] == pytest.approx(0.5) and given[3, 2] == pytest.approx(0.5)
    assert given[4, 4] == pytest.approx(0.5 * math.exp(-0.05 / 0.2)) and given[4, 2] == 0


def test_the_loss_reads_the_soft_targets_of_this_ranks_rows():
    from sentitune.train import BatchLoss

    labels = np.array([0, 0, 1, 2, 2])
    targets = soft_targets(np.array([-0.3, -0.01, 0.0, 0.02, 0.7]), labels, (0.0, 0.0), 0.1, 3)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.1, 0.3], [0.0, 2.0, 0.0]])
    rows = np.array([1, 3, 4])  # this rank's rows of a batch of five
    log_p = torch.log_softmax(logits, dim=-1)
    expected = -(torch.from_numpy(targets[rows]) * log_p).sum(-1)
    cfg = TrainConfig(data="d", soft_targets=0.1)
    loss, per_example = BatchLoss(labels, cfg, torch.device("cpu"), targets=targets)(
        logits, torch.from_numpy(labels[rows]), np.arange(5), rows
    )
    torch.testing.assert_close(per_example, expected)
    torch.testing.assert_close(loss, expected.sum() / 5)
    hard, _ = BatchLoss(labels, TrainConfig(data="d"), torch.device("cpu"))(
        logits, torch.from_numpy(labels[rows]), rows
    )
    assert not torch.allclose(hard, expected.mean())  # the hard labels give another loss on these posts

    # class weights follow each post's class, as with hard labels
    weighted = BatchLoss(
        labels, TrainConfig(data="d", class_weights="auto"), torch.device("cpu"), targets=targets
    )
    loss, _ = weighted(logits, torch.from_numpy(labels[rows]), rows, rows)
    weight = torch.tensor([5 / 6, 5 / 3, 5 / 6])[labels[rows]]
    torch.testing.assert_close(loss, (weight * expected).sum() / weight.sum())


def test_vader_labelled_posts_weigh_less_than_posts_people_labelled(tmp_path):
    from sentitune.splits import read_labelled
    from sentitune.train import BatchLoss

    # a prepared split mixing people's labels with VADER's, as prepare writes it
    split = tmp_path / "train.csv"
    pd.DataFrame(
        {
            "text": ["good", "bad", "fine", "awful", "great"],
            "label": ["positive", "negative", "neutral", "negative", "positive"],
            "label_source": ["human", "vader", "vader", "human", "vader"],
        }
    ).to_csv(split, index=False)
    read = read_labelled(str(split))
    assert read.weak.tolist() == [False, True, True, False, True]
    logits = torch.tensor(
        [[0.5, 0.0, -0.5], [0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [0.0, 0.0, 2.0], [0.3, 0.3, 0.3]]
    )
    y = torch.from_numpy(read.labels)
    per_post = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    rows = np.arange(5)
    for weight in (0.25, 1.0):
        cfg = TrainConfig(data="d", weak_label_weight=weight)
        loss, per_example = BatchLoss(read.labels, cfg, torch.device("cpu"), weak=read.weak)(logits, y, rows)
        w = torch.where(torch.from_numpy(read.weak), weight, 1.0)
        torch.testing.assert_close(per_example, per_post)
        torch.testing.assert_close(loss, (w * per_post).sum() / w.sum())
    # a split of one source (no column, or all rows alike) is not reweighted
    alone = BatchLoss(read.labels, TrainConfig(data="d", weak_label_weight=0.25), torch.device("cpu"),
                      weak=np.ones(5, bool))  # fmt: skip
    torch.testing.assert_close(alone(logits, y, rows)[0], per_post.mean())


def test_posts_people_labelled_beside_vaders_keep_their_label_as_the_target(tmp_path):
    from sentitune.errors import SentituneError
    from sentitune.splits import Prepared, read_labelled
    from sentitune.train import soft_targets_of

    # prepare's mixed split: VADER's rows carry the score their label came from, people's rows none
    frame = pd.DataFrame(
        {
            "text": ["good", "meh", "bad", "fine"],
            "label": ["positive", "negative", "negative", "neutral"],
            "score": [0.02, None, -0.6, None],
            "label_source": ["vader", "human", "vader", "human"],
        }
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    read = read_labelled(str(tmp_path / "train.csv"), with_scores=True)
    prepared = Prepared({"train": str(tmp_path / "train.csv")}, LABELS, score_boundaries=(0.0, 0.0))
    targets = soft_targets_of(TrainConfig(data="d", soft_targets=0.1), read, prepared)
    expected = soft_targets(np.array([0.02, -0.6]), read.labels[[0, 2]], (0.0, 0.0), 0.1, 3)
    np.testing.assert_allclose(targets[[0, 2]], expected)
    assert targets[0].max() < 1  # a VADER score near the boundary shares its target
    np.testing.assert_array_equal(targets[[1, 3]], np.eye(3, dtype=np.float32)[[0, 1]])
    # a VADER row without its score is still a broken split
    frame.loc[0, "score"] = None
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SentituneError, match="the score column is not all numbers"):
        read_labelled(str(tmp_path / "train.csv"), with_scores=True)


@pytest.fixture(scope="module")
def vader_folders(tmp_path_factory, tweets):
    """The shared tweets labelled by VADER, prepared as CSV and as Parquet."""
    root = tmp_path_factory.mktemp("vader")
    tweets[["text"]].to_csv(root / "posts.csv", index=False)
    folders = {}
    for fmt in ("csv", "parquet"):
        folders[fmt] = root / fmt
        code = cli_main("prepare", root / "posts.csv", "--label-with", "vader", "--output-dir", folders[fmt],
                        "--format", fmt)  # fmt: skip
        assert code == 0
    return folders


def cli_main(*args) -> int:
    from sentitune.cli import main

    return main([str(a) for a in args])


def _splits(folder, fmt):
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    return pd.concat(read(folder / f"{name}.{fmt}") for name in ("train", "eval", "test"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_prepare_keeps_the_score_each_label_was_read_from(vader_folders, fmt):
    folder = vader_folders[fmt]
    rows = _splits(folder, fmt)
    assert list(rows.columns) == ["text", "label", "score"] and rows["score"].dtype == np.float64
    np.testing.assert_array_equal(rows["score"], vader_scores(rows["text"]).astype(float))
    names = np.array(["negative", "neutral", "positive"])
    assert (names[score_to_class(rows["score"].to_numpy(), 0.0)] == rows["label"]).all()
    assert json.loads((folder / "labels.json").read_text()) == {
        "labels": ["negative", "neutral", "positive"],
        "score_boundaries": [0.0, 0.0],
    }


def test_a_score_column_keeps_its_band_and_category_labels_keep_no_score(tmp_path, capsys, prepared, tweets):
    # the walkthrough's schema, prepared with the default band: `prepared` (scores in [-1, 1])
    assert json.loads((prepared / "labels.json").read_text())["score_boundaries"] == [0.0, 0.0]
    assert "score" in pd.read_csv(prepared / "train.csv").columns
    frame = tweets[["text"]].assign(sentiment=np.linspace(-1, 1, len(tweets)))
    frame.to_csv(tmp_path / "scored.csv", index=False)
    code, _, _ = cli(capsys, "prepare", tmp_path / "scored.csv", "--output-dir", tmp_path / "banded",
                     "--neutral-band", "0.1")  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "banded" / "labels.json").read_text())["score_boundaries"] == [-0.1, 0.1]
    tweets[["text", "label"]].to_csv(tmp_path / "named.csv", index=False)
    code, _, _ = cli(capsys, "prepare", tmp_path / "named.csv", "--output-dir", tmp_path / "named")
    assert code == 0
    assert json.loads((tmp_path / "named" / "labels.json").read_text()) == {
        "labels": ["negative", "neutral", "positive"]
    }
    assert list(pd.read_csv(tmp_path / "named" / "train.csv").columns) == ["text", "label"]


@pytest.mark.parametrize("fmt, normalize", [("csv", "tweet"), ("parquet", "none")])
def test_train_on_soft_targets_from_a_prepared_folder(
    tmp_path, caplog, tiny_model, vader_folders, fmt, normalize
):
    run = train_tiny(tmp_path / "run", tiny_model, vader_folders[fmt], soft_targets=0.1, normalize=normalize)
    assert json.loads((run / "run_config.json").read_text())["train"]["soft_targets"] == 0.1
    # VADER scores a mention's name as a word: a run that reads @user instead is told so
    warned = [r.getMessage() for r in caplog.records if "VADER reads mention names" in r.getMessage()]
    assert warned == (
        [
            "the labels are VADER's, and VADER reads mention names ('@united' counts as the positive word "
            "'united') that --normalize tweet turns into @user: --normalize none lets the model read what "
            "VADER read"
        ]
        if normalize == "tweet"
        else []
    )
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    losses = [row["train_loss"] for row in history]
    assert losses and all(math.isfinite(x) for x in losses)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert "(`--soft-targets 0.1`)" in (run / "README.md").read_text()  # the model card says so


def test_a_dry_run_keeps_the_scores(tmp_path, capsys, tiny_model, vader_folders):
    code, _, err = cli(capsys, "train", "--data", vader_folders["csv"], "--model", tiny_model,
                       "--job-dir", tmp_path / "job", "--dry-run", "--soft-targets", "0.1")  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {"score_boundaries": ["low", 0.0]},
            'score_boundaries ["low", 0.0] are not 2 increasing numbers; run `sentitune prepare` again',
        ),
        (
            {"score_boundaries": [0.5, -0.5]},
            "score_boundaries [0.5, -0.5] are not 2 increasing numbers; run `sentitune prepare` again",
        ),
        (
            {"score_boundaries": [0.0]},
            "score_boundaries [0.0] are not 2 increasing numbers; run `sentitune prepare` again",
        ),
    ],
)
def test_an_edited_label_set_or_score_column_is_a_one_line_error(
    tmp_path, capsys, tiny_model, vader_folders, edit, message
):
    data = Path(shutil.copytree(vader_folders["csv"], tmp_path / "data"))
    label_set = json.loads((data / "labels.json").read_text()) | edit
    (data / "labels.json").write_text(json.dumps(label_set))
    job = tmp_path / "job"
    given = cli_error(
        capsys, "train", "--data", data, "--model", tiny_model, "--job-dir", job, "--soft-targets", "0.1"
    )
    assert given == f"{data / 'labels.json'}: {message}"
    assert not job.exists()


def test_a_score_that_is_not_a_number_is_a_one_line_error(tmp_path, capsys, tiny_model, vader_folders):
    data = Path(shutil.copytree(vader_folders["csv"], tmp_path / "data"))
    train = pd.read_csv(data / "train.csv")
    train["score"] = train["score"].astype(object)
    train.loc[3, "score"] = "n/a"
    train.to_csv(data / "train.csv", index=False)
    job = tmp_path / "job"
    given = cli_error(
        capsys, "train", "--data", data, "--model", tiny_model, "--job-dir", job, "--soft-targets", "0.1"
    )
    assert (
        given
        == f"{data / 'train.csv'}: the score column is not all numbers (1 row is not); run `sentitune prepare` again"
    )
    assert not job.exists()


# ----------------------------------------------------------------------------- prepare --augment


@pytest.mark.fast
def test_synthetic_posts_delete_words_or_join_two_posts():
    from sentitune.prepare import synthetic_posts

    # every word names its post and place: p12w3 is word 3 of post 12
    words = [[f"p{i}w{j}" for j in range(i % 7 + 2)] for i in range(300)]
    made = synthetic_posts([" ".join(w) for w in words], 2, seed=7)
    assert made == synthetic_posts([" ".join(w) for w in words], 2, seed=7)
    assert made != synthetic_posts([" ".join(w) for w in words], 2, seed=8)
    assert 300 < len(made) <= 600
    kinds = {"deleted": 0, "joined": 0}
    for text in made:
        parts = [tuple(map(int, w[1:].split("w"))) for w in text.split()]  # (post, place) per word
        posts = [p for p, _ in parts]
        first = [(p, j) for p, j in parts if p == posts[0]]
        rest = [(p, j) for p, j in parts if p != posts[0]]
        if not rest:  # words deleted from one post: in order, 3 or more kept, some dropped
            places = [j for _, j in first]
            assert places == sorted(places) and 3 <= len(places) < len(words[posts[0]])
            kinds["deleted"] += 1
        else:  # a post's first words (not all), then another post's last words (not all)
            other = rest[0][0]
            assert parts == first + rest and all(p == other for p, _ in rest)
            assert [j for _, j in first] == list(range(len(first))) and len(first) < len(words[posts[0]])
            tail = [j for _, j in rest]
            assert tail == list(range(len(words[other]) - len(tail), len(words[other]))) and tail[0] > 0
            kinds["joined"] += 1
    assert kinds["deleted"] > 100 and kinds["joined"] > 100


@pytest.fixture(scope="module")
def augmented(tmp_path_factory, tweets):
    """The shared tweets labelled by VADER, prepared with --augment 2 (CSV, Parquet) and without."""
    root = tmp_path_factory.mktemp("augment")
    tweets[["text"]].to_csv(root / "posts.csv", index=False)
    folders = {}
    for name, options in {"plain": [], "csv": ["--augment", "2"], "parquet": ["--augment", "2", "--format", "parquet"]}.items():  # fmt: skip
        folders[name] = root / name
        assert cli_main("prepare", root / "posts.csv", "--label-with", "vader", "--output-dir", folders[name], *options) == 0  # fmt: skip
    return folders


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_augment_adds_vader_labelled_posts_to_training_only(augmented, fmt):
    from sentitune.prepare import normalise_for_near_duplicates

    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    plain, folder = augmented["plain"], augmented[fmt]
    for split in ("eval", "test"):  # validation and test: the same real posts as without --augment
        pd.testing.assert_frame_equal(read(folder / f"{split}.{fmt}"), pd.read_csv(plain / f"{split}.csv"))
    real = pd.read_csv(plain / "train.csv")
    train = read(folder / f"train.{fmt}")
    pd.testing.assert_frame_equal(
        train.iloc[: len(real)].reset_index(drop=True), real
    )  # every real post kept
    made = train.iloc[len(real) :]
    report = json.loads((folder / "prepare_report.json").read_text())
    assert report["augmented"]["posts"] == len(made) and report["augmented"]["per_post"] == 2
    assert len(made) + report["augmented"]["dropped_as_duplicates"] > 1.5 * len(real)
    assert report["class_counts"]["train"] == train["label"].value_counts().to_dict()
    assert report["augmented"]["class_counts"] == made["label"].value_counts().to_dict()
    # labelled as the real posts are: VADER's compound score and its sign
    np.testing.assert_array_equal(made["score"], vader_scores(made["text"]).astype(float))
    names = np.array(["negative", "neutral", "positive"])
    assert (names[score_to_class(made["score"].to_numpy(), 0.0)] == made["label"]).all()
    # no synthetic post repeats a post of any split, or another synthetic one
    every_real = pd.concat(
        [real["text"], read(folder / f"eval.{fmt}")["text"], read(folder / f"test.{fmt}")["text"]]
    )
    seen = set(normalise_for_near_duplicates(every_real))
    fresh = normalise_for_near_duplicates(made["text"])
    assert not fresh.isin(seen).any() and fresh.is_unique
    # every synthetic post is made of training words only (its parts come from the training split)
    vocabulary = {w for t in real["text"] for w in t.split()}
    assert all(w in vocabulary for t in made["text"] for w in t.split())
