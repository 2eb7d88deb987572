"""`sentitune prepare`: labels, cleaning, splitting and the files it writes, on real posts."""

from __future__ import annotations

import json
import re
import shlex
import uuid

import fsspec
import ftfy  # its import registers the sloppy-windows-1252 codec: how mojibake is made below
import numpy as np
import pandas as pd
import pytest
from helpers import SPLIT_FILES, clean, cli, cli_error, read_splits, scores_of, snapshot, walkthrough_frame

from sentitune import LABELS
from sentitune.config import PrepareConfig
from sentitune.prepare import prepare, repair_encoding
from sentitune.splits import read_labelled


@pytest.fixture(scope="session")
def corpus(corpus: pd.DataFrame) -> pd.DataFrame:
    """The session's posts as prepare writes them, their encodings repaired (repair_encoding): what the
    tests here compare the written splits with."""
    repaired = corpus.assign(text=repair_encoding(corpus["text"])[0])
    assert repaired["text"].is_unique
    return repaired


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


# ----------------------------------------------------------------------------- your own posts

STARS = {"negative": (1, 2), "neutral": (3,), "positive": (4, 5)}


def _stars(classes: pd.Series, scale: dict[str, tuple]) -> list:
    """A rating per post, cycling through the ratings its class spans."""
    return [scale[c][i % len(scale[c])] for i, c in enumerate(classes)]


@pytest.mark.parametrize(
    "names,picked",
    [
        (("Review_Text", "Stars"), ("Review_Text", "Stars")),
        (("review", "stars"), ("review", "stars")),
        (("tweetText", "star_rating"), ("tweetText", "star_rating")),
        (
            ("context", "body", "Sentiment", "score"),
            ("body", "Sentiment"),
        ),  # context is no text; sentiment first
    ],
)
def test_columns_are_found_by_name_and_printed(tmp_path, capsys, caplog, corpus, names, picked):
    frame = pd.DataFrame({name: corpus["text"].to_numpy() for name in names})
    frame[picked[1]] = _stars(corpus["sentiment"], STARS)
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    label_map = "1=negative,2=negative,3=neutral,4=positive,5=positive"
    code, _, err = cli(
        capsys,
        "prepare",
        tmp_path / "reviews.csv",
        "--output-dir",
        tmp_path / "out",
        "--label-map",
        label_map,
    )
    assert code == 0, err
    assert (
        f"{tmp_path / 'reviews.csv'}: text column '{picked[0]}', label column '{picked[1]}' (found by name; choose "
        "others with --text-column / --label-column)"
    ) in caplog.messages
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["columns"] == [
        {"path": str(tmp_path / "reviews.csv"), "text": picked[0], "label": picked[1]}
    ]
    got = read_splits(tmp_path / "out").set_index("text")["label"]
    assert got.to_dict() == dict(zip(clean(corpus["text"]), corpus["sentiment"], strict=True))


def _suggested(message: str) -> list[list[str]]:
    """The option sets an error suggests: 'add OPTIONS to read them as ...' and 'or OPTIONS to keep them'."""
    found = re.search(r"add (.+?) to read them as .+?, or (.+?) to keep them as \d+ classes", message)
    return [shlex.split(found.group(1)), shlex.split(found.group(2))]


@pytest.mark.parametrize(
    "column,scale,classes",
    [
        ("stars", STARS, ("1", "2", "3", "4", "5")),
        (
            "rating",
            {"negative": (1, 2, 3, 4), "neutral": (5, 6), "positive": (7, 8, 9, 10)},
            tuple("123456789") + ("10",),
        ),
        ("label", {"negative": (0,), "neutral": (1,), "positive": (1,)}, ("0", "1")),
        (
            "label",
            {"negative": ("awful",), "neutral": ("mixed",), "positive": ("great",)},
            ("awful", "mixed", "great"),
        ),
    ],
    ids=["stars-1-5", "ratings-1-10", "zero-one", "words"],
)
def test_the_label_options_an_error_suggests_work_when_copied(
    tmp_path, capsys, corpus, column, scale, classes
):
    frame = pd.DataFrame({"text": corpus["text"].to_numpy(), column: _stars(corpus["sentiment"], scale)})
    frame.to_csv(tmp_path / "posts.csv", index=False)
    message = cli_error(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", tmp_path / "out")
    mapped, own = _suggested(message)

    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "mapped", *mapped)
    got = read_splits(tmp_path / "mapped").set_index("text")["label"]
    rating = dict(zip(clean(frame["text"]), frame[column].astype(str), strict=True))
    mapping = report["labels"]["mapping"]
    assert all(got[t] == mapping[rating[t]] for t in got.index)
    by_rank = [mapping[c] for c in classes]  # low ratings negative, high positive, in order
    assert by_rank == sorted(by_rank, key=["negative", "neutral", "positive"].index)
    assert by_rank[0] == "negative" and by_rank[-1] == "positive"

    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "own", *own)
    assert json.loads((tmp_path / "own" / "labels.json").read_text())["labels"] == list(classes)
    got = read_splits(tmp_path / "own").set_index("text")["label"]
    assert all(got[t] == rating[t] for t in got.index)


def test_labels_that_leave_a_class_empty_are_warned_about_with_options_that_work(
    tmp_path, capsys, caplog, corpus
):
    frame = pd.DataFrame(
        {
            "text": corpus["text"].to_numpy(),
            "label": np.where(corpus["sentiment"] == "negative", "neg", "pos"),
        }
    )
    frame.to_csv(tmp_path / "posts.csv", index=False)
    code, _, err = cli(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", tmp_path / "out")
    assert code == 0, err
    prefix = f"{tmp_path / 'posts.csv'}: no post is labelled neutral, a class the model would never see; "
    (warning,) = [m for m in caplog.messages if m.startswith(prefix)]
    mapped, _ = _suggested(warning)
    assert mapped == ["--labels", "negative,positive", "--label-map", "neg=negative,pos=positive"]
    run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "two", *mapped)
    assert json.loads((tmp_path / "two" / "labels.json").read_text())["labels"] == ["negative", "positive"]


def test_posts_are_read_as_written_mojibake_and_windows_1252_repaired(tmp_path, capsys, corpus):
    written = [
        "I don’t like it — not at all",
        "Café crème, s’il vous plaît… 5€",
        "Naïve “smart” car",
        "השירות היה מעולה, תודה רבה",
        "الرحلة تأخرت كثيرا",
        "loved it 😍🔥 &amp; more",
        "ｆｕｌｌ ｗｉｄｔｈ and ﬁ ligature",
    ]
    frame = walkthrough_frame(corpus)
    header, rows = frame.to_csv(index=False).encode("utf-8").split(b"\n", 1)
    cp1252 = [f'"{t} {i}",0.9\n'.encode("cp1252") for i, t in enumerate(written[:3])]
    mojibake = [
        f'"{t} {i}",-0.9\n'.encode().decode("sloppy-windows-1252").encode() for i, t in enumerate(written[:3])
    ]
    as_is = [f'"{t}",0.5\n'.encode() for t in written[3:]]
    empty = [b'"",0.5\n', b'"   ",-0.5\n']
    (tmp_path / "posts.csv").write_bytes(header + b"\n" + b"".join(cp1252 + mojibake + as_is + empty) + rows)

    report = run_prepare(capsys, tmp_path / "posts.csv", "--output-dir", tmp_path / "out")

    got = read_splits(tmp_path / "out").set_index("text")["label"]
    for i, text in enumerate(written[:3]):
        # Windows-1252 read as latin-1 and repaired (+0.9), then the mojibake copy read after it repairs
        # into the same post (-0.9): the later label wins
        assert got[f"{text} {i}"] == "negative"
    assert report["rows_decoded_as_latin1"] == 3
    assert report["duplicates_with_other_label"] == 3  # the mojibake copies repair into the same posts
    assert report["conflicts"] == {"posts": 3, "rows": 6, "policy": "later", "file": "conflicts.csv"}
    listed = pd.read_csv(tmp_path / "out" / "conflicts.csv")
    assert sorted(listed["text"]) == sorted(f"{t} {i}" for i, t in enumerate(written[:3]))
    assert set(listed["labels"]) == {"positive > negative"} and set(listed["kept"]) == {"negative"}
    for text in written[3:]:
        assert text in got.index  # right-to-left scripts, emoji, entities and widths stay as written
    assert report["text_repair"]["rows_repaired"] == 6
    # what no decoder restores (the corpus' own garbled posts) is counted, and left as read
    assert report["text_repair"]["rows_still_garbled"] == sum(ftfy.is_bad(t) for t in frame["bodyText"])
    assert report["text_repair"]["by"] == f"ftfy {ftfy.__version__} (encoding fixes of whole posts)"
    assert report["rows_dropped"]["empty_text"] == 2
    page = (tmp_path / "out" / "report.html").read_text()
    assert (
        "posts whose encoding was repaired" in page and "lines that were not UTF-8, read as latin-1" in page
    )


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
        [".sentitune-output.json", "train.parquet", "eval.parquet", "test.parquet", "labels.json"]
        + ["prepare_report.json", "report.html"]
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


@pytest.mark.parametrize(
    "name, separator, encoding",
    [
        ("semicolons.csv", ";", "utf-8"),  # spreadsheets where the decimal mark is a comma
        ("excel-utf8.csv", ";", "utf-8-sig"),  # the same, saved as "CSV UTF-8" (a byte-order mark)
        ("pipes.csv", "|", "utf-8"),
        ("unicode-text.txt", "\t", "utf-16"),  # Excel's "Unicode text": UTF-16 LE with its mark, tabs
        ("big-endian.csv", ",", "utf-16-be-bom"),
    ],
)
def test_files_as_spreadsheets_and_other_tools_write_them_read_as_the_plain_csv(
    tmp_path, capsys, corpus, name, separator, encoding
):
    frame = walkthrough_frame(corpus)
    frame.loc[0, "bodyText"] = 'commas, semicolons; pipes | and "quotes" in one post'
    plain = run_prepare(capsys, write(frame, tmp_path / "plain.csv"), "--output-dir", tmp_path / "a")
    text = frame.to_csv(index=False, sep=separator)
    data = ("\ufeff" + text).encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    (tmp_path / name).write_bytes(data)
    report = run_prepare(capsys, tmp_path / name, "--output-dir", tmp_path / "b")
    assert report["rows_read"] == plain["rows_read"] == len(frame)
    assert report["rows_decoded_as_latin1"] == 0
    pd.testing.assert_frame_equal(read_splits(tmp_path / "b"), read_splits(tmp_path / "a"))


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_a_comma_file_whose_posts_hold_semicolons_stays_a_comma_file(tmp_path, capsys, corpus):
    frame = walkthrough_frame(corpus)
    frame["bodyText"] = frame["bodyText"] + "; and; more; of; this;"
    frame = frame.rename(columns={"bodyText": "text; of the post, as written"})  # quoted: ';' inside
    report = run_prepare(
        capsys, write(frame, tmp_path / "posts.csv"), "--text-column", "text; of the post, as written",
        "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert report["rows_read"] == len(frame)
    assert read_splits(tmp_path / "out")["text"].str.endswith("; and; more; of; this;").all()
