"""`sentitune prepare`: labels, cleaning, splitting and the files it writes, on real posts."""

from __future__ import annotations

import json
import re
import uuid

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import SPLIT_FILES, clean, cli, read_splits, scores_of, snapshot, walkthrough_frame

from sentitune import LABELS
from sentitune.config import PrepareConfig
from sentitune.prepare import prepare
from sentitune.splits import read_labelled


def run_prepare(capsys, *args) -> dict:
    code, out, err = cli(capsys, "prepare", *args)
    assert code == 0, err
    assert "wrote " in out
    output_dir = args[args.index("--output-dir") + 1]
    with fsspec.open(f"{output_dir}/prepare_report.json", "r") as f:
        return json.load(f)


def expected_class(scores: pd.Series, band: float) -> pd.Series:
    if band == 0:  # the walkthrough's rule: class id = sign(score) + 1
        ids = np.sign(scores) + 1
    else:
        ids = np.where(scores < -band, 0, np.where(scores > band, 2, 1))
    return pd.Series(np.asarray(LABELS)[np.asarray(ids, int)], index=scores.index)


def labelled_frame(texts: pd.Series, classes: pd.Series, spelling: dict[str, str], column: str = "label"):
    return pd.DataFrame({"text": texts.to_numpy(), column: classes.map(spelling).to_numpy()})


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "band,missing", [(0.0, ""), (0.1, ""), (0.0, "NaN")], ids=["sign", "neutral band 0.1", "NaN written out"]
)
def test_walkthrough_scores_map_by_sign_and_drop_missing(tmp_path, capsys, corpus, band, missing):
    frame = walkthrough_frame(corpus, missing)
    frame.to_csv(tmp_path / "posts.csv", index=False)
    flags = ["--neutral-band", band] if band else []
    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out", *flags)

    scores = scores_of(frame)
    assert scores.isna().sum() == 6
    assert report["rows_read"] == len(frame)
    assert report["rows_dropped"]["missing_label"] == 6
    assert report["rows_kept"] == len(frame) - 6
    assert report["labels"]["source"] == "score"

    got = read_splits(tmp_path / "out").set_index("text")["label"]
    want = expected_class(scores.dropna(), band)
    assert len(got) == len(want)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    # the band matters for this data: small non-zero scores are neutral only with the band
    small = scores[(scores.abs() <= 0.1) & (scores != 0)].index
    assert len(small) > 10
    assert (got[small] == "neutral").all() == bool(band)


SPELLINGS = {
    "names": ({"negative": "negative", "neutral": "neutral", "positive": "positive"}, []),
    "short": ({"negative": "neg", "neutral": "neu", "positive": "pos"}, []),
    "mixed case": ({"negative": "NEGATIVE", "neutral": "Neutral", "positive": " Positive "}, []),
    "ids 0/1/2": ({"negative": "0", "neutral": "1", "positive": "2"}, []),
    "ids -1/0/1": ({"negative": "-1", "neutral": "0", "positive": "1"}, []),
    "ids -1/0/1 as categories": (
        {"negative": "-1", "neutral": "0", "positive": "1"},
        ["--label-type", "category"],
    ),
    "label map": (
        {"negative": "bad", "neutral": "meh", "positive": "good"},
        ["--label-map", "bad=negative,meh=neutral,good=positive"],
    ),
}


@pytest.mark.parametrize("spelling,flags", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_categorical_labels_in_every_accepted_spelling(tmp_path, capsys, corpus, spelling, flags):
    labelled_frame(corpus["text"], corpus["sentiment"], spelling).to_csv(tmp_path / "posts.csv", index=False)
    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out", *flags)

    assert report["rows_kept"] == len(corpus)
    got = read_splits(tmp_path / "out").set_index("text")["label"].sort_index()
    want = corpus.set_index("text")["sentiment"].sort_index()
    pd.testing.assert_series_equal(got, want, check_names=False)


def test_label_with_vader_labels_unlabelled_text(tmp_path, capsys, tweets):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    tweets[["text"]].to_csv(tmp_path / "posts.csv", index=False)
    report = run_prepare(
        capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out", "--label-with", "vader"
    )

    assert report["labels"]["source"] == "vader"
    got = read_splits(tmp_path / "out").set_index("text")["label"]
    analyzer = SentimentIntensityAnalyzer()
    compound = pd.Series({t: analyzer.polarity_scores(t)["compound"] for t in got.index})
    pd.testing.assert_series_equal(
        got.sort_index(), expected_class(compound, 0.0).sort_index(), check_names=False
    )
    assert set(got) == set(LABELS)


def test_text_column_falls_back_to_a_single_text_column(tmp_path, capsys, tweets):
    tweets[["label", "text"]].to_csv(tmp_path / "posts.csv", index=False)
    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out")
    assert report["columns"][0]["text"] == "text"
    assert report["columns"][0]["label"] == "label"
    assert report["rows_kept"] == len(tweets)


# ----------------------------------------------------------------------------- inputs


def test_two_inputs_are_combined(tmp_path, capsys, corpus):
    frame = walkthrough_frame(corpus)
    half = len(frame) // 2
    twitter = frame[:half]
    facebook = frame[half:].assign(postId=[f"fb_{i}" for i in range(len(frame) - half)], likes=7)
    twitter.to_csv(tmp_path / "twitter.csv", index=False)
    facebook[["postId", "likes", "bodyText", "sentiment"]].to_csv(tmp_path / "facebook.csv", index=False)

    report = run_prepare(
        capsys, tmp_path / "twitter.csv", tmp_path / "facebook.csv", "--output-dir", tmp_path / "out"
    )

    assert [i["rows"] for i in report["inputs"]] == [len(twitter), len(facebook)]
    assert report["rows_read"] == len(frame)
    got = read_splits(tmp_path / "out")
    assert set(got["text"]) == set(scores_of(frame).dropna().index)
    assert list(got.columns) == ["text", "label", "score", "split"]  # scores are kept beside the class
    given = scores_of(frame).dropna()
    given = given[~given.index.duplicated()]
    np.testing.assert_allclose(got["score"].astype(float), given[got["text"]].to_numpy())


def test_outputs_and_stratified_80_10_10_split(prepared):
    assert sorted(p.name for p in prepared.iterdir()) == sorted(SPLIT_FILES)
    assert json.loads((prepared / "labels.json").read_text()) == {
        "labels": list(LABELS),
        "score_boundaries": [0.0, 0.0],  # the sign rule: neutral is the score 0
    }
    report = json.loads((prepared / "prepare_report.json").read_text())

    got = read_splits(prepared)
    counts = got.groupby(["split", "label"]).size()
    for split in ("train", "eval", "test"):
        assert report["class_counts"][split] == {label: int(counts[split][label]) for label in LABELS}
    for label in LABELS:
        n = sum(int(counts[s][label]) for s in ("train", "eval", "test"))
        assert n >= 40
        assert abs(counts["eval"][label] - 0.1 * n) <= 1
        assert abs(counts["test"][label] - 0.1 * n) <= 1
    assert not set(got[got.split == "train"].text) & set(got[got.split != "train"].text)


def test_unequal_validation_and_test_fractions_size_each_split(tmp_path, capsys, corpus):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "splits"
    code, _, err = cli(
        capsys,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        out,
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.05",
    )
    assert code == 0, err
    counts = read_splits(out).groupby(["split", "label"]).size()
    for label in LABELS:
        n = sum(int(counts[s][label]) for s in ("train", "eval", "test"))
        assert abs(counts["eval"][label] - 0.2 * n) <= 1, label
        assert abs(counts["test"][label] - 0.05 * n) <= 1, label
    fractions = json.loads((out / "prepare_report.json").read_text())["split"]["fractions"]
    assert fractions == {"train": 0.75, "eval": 0.2, "test": 0.05}


def test_same_seed_gives_identical_bytes_and_other_seed_another_split(tmp_path, corpus):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)

    def run(name, seed):
        prepare(
            PrepareConfig(inputs=[str(tmp_path / "posts.csv")], output_dir=str(tmp_path / name), seed=seed)
        )
        return snapshot(tmp_path / name)

    first, again, other = run("a", 7), run("b", 7), run("c", 8)
    assert first == again
    assert first["train.csv"] != other["train.csv"]
    assert sorted(first["test.csv"].splitlines()) != sorted(other["test.csv"].splitlines())


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_tsv_jsonl_and_parquet_inputs_give_the_csv_result(tmp_path, capsys, corpus, fmt):
    frame = walkthrough_frame(corpus)
    frame.to_csv(tmp_path / "posts.csv", index=False)
    numeric = frame.assign(sentiment=pd.to_numeric(frame["sentiment"], errors="coerce"))
    path = tmp_path / f"posts.{fmt}"
    if fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        numeric.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        numeric.to_parquet(path, index=False)

    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "from-csv")
    report = run_prepare(capsys, path, "--output-dir", tmp_path / "from-other")

    assert report["rows_dropped"]["missing_label"] == 6
    # the same rows and labels; scores as each format's reader gives them (JSON's parser may differ from
    # the CSV text in the last bit: 0.6394000000000001 for 0.6394)
    pd.testing.assert_frame_equal(
        read_splits(tmp_path / "from-other"),
        read_splits(tmp_path / "from-csv"),
        check_exact=False,
        rtol=1e-12,
    )


def test_parquet_output_holds_the_csv_rows(tmp_path, capsys, corpus):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "csv")
    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "pq", "--format", "parquet")

    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == sorted(
        ["train.parquet", "eval.parquet", "test.parquet", "labels.json", "prepare_report.json", "report.html"]
    )
    pd.testing.assert_frame_equal(read_splits(tmp_path / "pq", "parquet"), read_splits(tmp_path / "csv"))


# ----------------------------------------------------------------------------- cleaning


def _normalised(text: str) -> str:
    text = re.sub(r"https?://\S+|www\.\S+", "", text.lower())
    return " ".join(re.sub(r"@\w+", "@user", text).split())


@pytest.mark.parametrize("drop_near", [False, True])
def test_exact_duplicates_dropped_near_duplicates_reported(tmp_path, capsys, tweets, drop_near):
    base = tweets[~tweets["text"].map(_normalised).duplicated(keep=False)].reset_index(drop=True)
    base = base[base["text"].str.contains(" ")]
    mentions = base[base["text"].str.contains("@user ", regex=False)]
    assert len(mentions) > 30
    exact = base[:12].assign(text=lambda d: "  " + d["text"] + " ")  # same text after stripping
    near = pd.concat(
        [
            base[12:16].assign(text=lambda d: d["text"].str.upper()),
            base[16:20].assign(text=lambda d: d["text"].str.replace(" ", "   \t ", n=1)),
            base[20:24].assign(text=lambda d: d["text"] + " https://t.co/Xy12abC"),
            mentions[-4:].assign(text=lambda d: d["text"].str.replace("@user", "@SomeOne_else", n=1)),
        ]
    )
    assert not set(near["text"]) & set(base["text"])
    frame = pd.concat([base, exact.sample(frac=1, random_state=3), near.sample(frac=1, random_state=4)])
    n_near = len(near)
    frame.to_csv(tmp_path / "posts.csv", index=False)

    flags = ["--drop-near-duplicates"] if drop_near else []
    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out", *flags)

    assert report["rows_dropped"]["duplicate_text"] == len(exact)
    assert report["near_duplicates"]["rows"] == n_near
    assert report["near_duplicates"]["dropped"] is drop_near
    assert report["rows_dropped"].get("near_duplicate", 0) == (n_near if drop_near else 0)
    got = read_splits(tmp_path / "out")
    assert not got["text"].duplicated().any()
    assert len(got) == len(base) + (0 if drop_near else n_near)
    assert set(base["text"]) <= set(got["text"])
    for a, b in report["near_duplicates"]["examples"]:
        assert a != b and _normalised(a) == _normalised(b)


def test_latin1_lines_among_utf8_lines_are_read_and_counted(tmp_path, capsys, corpus):
    frame = walkthrough_frame(corpus)
    header, rows = frame.to_csv(index=False).encode("utf-8").split(b"\n", 1)
    latin1 = [
        "Le caf\xe9 du coin est ferm\xe9, quelle d\xe9ception",
        "Cr\xe8me br\xfbl\xe9e au menu ce soir",
        "Na\xefve question: o\xf9 est la gare?",
    ]
    utf8 = ["Un café crème, s'il vous plaît", "Déjà vu à Montréal"]
    extra = [f'"{t}",0.9\n'.encode("latin-1") for t in latin1] + [f'"{t}",-0.4\n'.encode() for t in utf8]
    (tmp_path / "posts.csv").write_bytes(header + b"\n" + b"".join(extra) + rows)

    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out")

    assert report["rows_decoded_as_latin1"] == len(latin1)
    assert report["rows_read"] == len(frame) + len(latin1) + len(utf8)
    got = read_splits(tmp_path / "out").set_index("text")["label"]
    for text in latin1:
        assert got[text] == "positive"
    for text in utf8:
        assert got[text] == "negative"
    assert set(scores_of(frame).dropna().index) <= set(got.index)  # the UTF-8 rows read unchanged


def test_bare_cr_inside_a_text_survives_prepare_and_read(tmp_path, capsys, corpus):
    frame = walkthrough_frame(corpus)
    frame.loc[0, "bodyText"] = "first line\rsecond line, still the same post"
    frame.loc[0, "sentiment"] = "0.5"
    frame.loc[1, "bodyText"] = "windows line\r\nbreak in a post"
    frame.loc[1, "sentiment"] = "-0.5"
    frame.to_csv(tmp_path / "posts.csv", index=False)
    assert b'"first line\rsecond line, still the same post"' in (tmp_path / "posts.csv").read_bytes()
    missing = int(scores_of(frame).isna().sum())

    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out")

    assert report["rows_read"] == len(frame)
    texts, labels = [], []
    for split in ("train", "eval", "test"):
        part = read_labelled(str(tmp_path / "out" / f"{split}.csv"))
        texts += part.texts
        labels += [LABELS[i] for i in part.labels]
    by_text = dict(zip(texts, labels, strict=True))
    assert len(texts) == report["rows_kept"] == len(frame) - missing
    assert by_text["first line\nsecond line, still the same post"] == "positive"
    assert by_text["windows line\nbreak in a post"] == "negative"


CHUNK_INPUTS = {
    "walkthrough scores": lambda corpus: walkthrough_frame(corpus),
    # class ids exported grouped by class (as a SQL `ORDER BY Target` does): the first chunk has no 2
    "class ids sorted": lambda corpus: pd.DataFrame(
        {"bodyText": corpus["text"], "Target": corpus["sentiment"].map({n: i for i, n in enumerate(LABELS)})}
    ).sort_values("Target", kind="stable"),
}


@pytest.mark.parametrize("make", CHUNK_INPUTS.values(), ids=CHUNK_INPUTS.keys())
def test_small_chunks_give_the_same_files(tmp_path, capsys, corpus, make):
    make(corpus).to_csv(tmp_path / "posts.csv", index=False)
    default = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "default")
    chunked = run_prepare(
        capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "chunked", "--chunk-rows", "7"
    )

    assert chunked["class_counts"] == default["class_counts"]
    pd.testing.assert_frame_equal(read_splits(tmp_path / "chunked"), read_splits(tmp_path / "default"))
    assert snapshot(tmp_path / "chunked") == snapshot(tmp_path / "default")
    assert set(read_splits(tmp_path / "default")["label"]) == set(LABELS)


@pytest.fixture
def memory_root():
    """A private folder of fsspec's in-process memory filesystem."""
    root = f"memory://sentitune-test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_fsspec_url_for_input_and_output(tmp_path, capsys, corpus, memory_root):
    frame = walkthrough_frame(corpus)
    frame.to_csv(tmp_path / "posts.csv", index=False)
    with fsspec.open(f"{memory_root}/in/posts.csv", "wb") as f:
        f.write((tmp_path / "posts.csv").read_bytes())

    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "local")
    report = run_prepare(capsys, f"{memory_root}/in/posts.csv", "--output-dir", f"{memory_root}/out")

    assert report["inputs"][0]["path"] == f"{memory_root}/in/posts.csv"
    fs = fsspec.filesystem("memory")
    remote = {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in fs.ls(f"{memory_root}/out", detail=False)}
    local = snapshot(tmp_path / "local")
    assert sorted(remote) == sorted(SPLIT_FILES)
    for name in ("train.csv", "eval.csv", "test.csv", "labels.json"):
        assert remote[name] == local[name]


def test_python_api_returns_the_report(tmp_path, corpus):
    labelled_frame(corpus["text"], corpus["sentiment"], {n: n for n in LABELS}).to_csv(
        tmp_path / "p.csv", index=False
    )
    result = prepare(PrepareConfig(inputs=[str(tmp_path / "p.csv")], output_dir=str(tmp_path / "out")))
    assert result.output_dir == str(tmp_path / "out")
    assert result.report == json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert sum(sum(c.values()) for c in result.report["class_counts"].values()) == len(corpus)
    assert clean(read_splits(tmp_path / "out")["text"]).is_unique
