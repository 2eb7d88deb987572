"""report.html of runs, evaluations and prepared data; predictions.csv; temperature scaling of the scores
(fitted on validation, built into the saved head so every backend scores alike)."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
from helpers import HOSTILE, RUN_ARGS, cli, label_ids, train_tiny

from sentitune import LABELS
from sentitune.config import SelectConfig, TrainConfig
from sentitune.metrics import calibration_bins, fit_temperature, nll, scale_temperature
from sentitune.scoring import Predictor
from sentitune.select import select
from sentitune.train import train


def metric_shown(page: str, key: str) -> str:
    return re.search(rf'data-metric="{key}">([^<]+)<', page).group(1)


def test_a_run_has_a_report_of_its_test_results_training_calibration_errors_and_data(trained_run):
    page = (trained_run / "report.html").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "macro_recall", "loss"):
        assert metric_shown(page, key) == f"{metrics['test'][key]:.4f}"
    figures = set(re.findall(r'data-figure="([^"]+)"', page)) | set(
        re.findall(r"data-figure='([^']+)'", page)
    )
    assert {"loss", "reliability", "confidence", "confusion", "error-slices"} <= figures
    assert "most confident mistakes" in page
    assert "Class balance" in page and "Settings" in page
    assert "Labelling rounds" not in page and 'data-figure="labelling-rounds"' not in page  # no round
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing loaded from elsewhere
    assert "<script" not in page


def test_calibration_on_a_split_too_small_to_check_is_refused_and_the_report_says_why(
    tmp_path, tiny_model, prepared
):
    runs = {}
    for mode in ("temperature", "none"):
        runs[mode] = train_tiny(tmp_path / mode, tiny_model, prepared, calibration=mode, precision="fp32")
    calibrated = json.loads((runs["temperature"] / "metrics.json").read_text())
    plain = json.loads((runs["none"] / "metrics.json").read_text())
    assert "calibration" not in plain
    c = calibrated["calibration"]
    val = pd.read_csv(prepared / "eval.csv")
    counts = ", ".join(f"{x} {(val['label'] == x).sum()}" for x in LABELS)
    assert c["decision"] == "refused" and c["temperature"] == 1.0
    assert c["reason"] == (
        f"the validation split has {len(val)} posts ({counts}), too few to check a temperature on posts it was "
        "not fitted on: that needs 100 posts and 5 of every class"
    )
    assert calibrated["test"] == plain["test"]  # the scores stay as trained
    texts = pd.read_csv(prepared / "test.csv")["text"].tolist()
    before = Predictor(str(runs["none"]), precision="fp32").probabilities(texts)
    after = Predictor(str(runs["temperature"]), precision="fp32").probabilities(texts)
    np.testing.assert_array_equal(after, before)
    page = (runs["temperature"] / "report.html").read_text()
    assert (
        f"No temperature scaling: {html.escape(c['reason'], quote=True)}. The scores above are as trained."
        in page
    )


def test_report_numbers_read_as_written_and_settings_never_show_none(trained_run):
    page = (trained_run / "report.html").read_text()
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1  # one validation: drawn as a point that carries its value
    validation = re.search(r'<svg data-figure="validation".*?</svg>', page).group(0)
    shown = re.findall(r'data-value="([^"]+)"', validation)
    assert shown == [f"{history[0]['val_accuracy']:.4f}", f"{history[0]['val_macro_f1']:.4f}"]
    settings = page[page.index("<h2>Settings</h2>") :]
    assert ">None<" not in settings and "not set (default)" in settings
    assert not re.search(r"\de[+-]\d", re.sub(r"<[^>]+>", " ", page).replace("5e-05", ""))


def test_counts_carry_thousands_separators_and_the_data_section_shows_the_prepare_report():
    from sentitune.report import ReportInput, render

    data = {
        "columns": [{"path": "posts.csv", "text": "Review_Text", "label": "Stars"}],
        "labels": {"source": "category", "mapping": {"1": "negative", "3": "neutral", "5": "positive"}},
        "rows_read": 38158,
        "rows_kept": 37243,
        "rows_dropped": {"empty_text": 0, "missing_label": 0, "duplicate_text": 915},
        "duplicates_with_other_label": 456,
        "rows_decoded_as_latin1": 4934,
        "text_repair": {
            "by": "ftfy 6.3.1 (encoding fixes of whole posts)",
            "rows_repaired": 2512,
            "rows_still_garbled": 2246,
        },
        "near_duplicates": {"rows": 1175, "dropped": False, "examples": []},
        "post_words_histogram": {"1-5": 1204, "6-10": 5210, "11-20": 19795, "21-40": 11012, "41+": 12},
    }
    counts = {"train": {"negative": 12782, "neutral": 11564, "positive": 5449}}
    page = render(ReportInput(title="t", metrics=None, labels=list(LABELS), data=data, class_counts=counts))
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    for shown in ("12,782", "29,795", "38,158 read, 37,243 kept", "19,795", "1,175 rows are near-duplicates"):
        assert shown in text
    assert not re.search(r"\de[+-]\d", text)
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]+)</td></tr>", page.split("data-figure='rows'")[1]))
    assert rows == {
        "dropped: empty text": "0",
        "dropped: missing label": "0",
        "dropped: duplicate text": "915",
        "duplicates whose label differs from the first copy&#x27;s (dropped)": "456",
        "lines that were not UTF-8, read as latin-1": "4,934",
        "posts whose encoding was repaired (ftfy 6.3.1 (encoding fixes of whole posts))": "2,512",
        "posts that still look garbled (bytes lost before the file was written)": "2,246",
    }
    assert "Review_Text" in text and "Stars" in text and "1 → negative" in text


def test_temperature_scaling_cures_an_over_confident_model(tmp_path, tiny_model, prepared):
    """A tiny run trained until it has learned something, its logits then ×5: over-confident. The
    temperature fitted on validation brings the test split's calibration error and NLL down."""
    run = train_tiny(tmp_path / "run", tiny_model, prepared, max_steps=60, batch_size=32, learning_rate=2e-3,
                     calibration="none", precision="fp32")  # fmt: skip
    predictor = Predictor(str(run), precision="fp32")
    splits = {name: pd.read_csv(prepared / f"{name}.csv") for name in ("eval", "test")}
    probs = {
        n: scale_temperature(predictor.probabilities(s["text"].tolist()), 1 / 5) for n, s in splits.items()
    }
    gold = {n: label_ids(s["label"]) for n, s in splits.items()}
    temperature = fit_temperature(gold["eval"], probs["eval"])
    calibrated = scale_temperature(probs["test"], temperature)
    before, after = (
        calibration_bins(gold["test"], probs["test"])[1],
        calibration_bins(gold["test"], calibrated)[1],
    )
    assert after < before
    assert nll(gold["test"], calibrated) < nll(gold["test"], probs["test"])
    assert temperature > 1  # the scores of an over-confident model are softened


def test_evaluate_writes_predictions_and_a_report_that_shows_hostile_text_as_text(run_copy, tmp_path, capsys):
    frame = pd.DataFrame(
        {"text": [*HOSTILE, "just fine", "meh"], "label": ["positive", "negative", "neutral", "neutral"]}
    )
    frame.to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "eval"
    code, printed, err = cli(
        capsys, "evaluate", run_copy, "--data", tmp_path / "posts.csv", "--output-dir", out
    )
    assert code == 0, err
    assert printed.splitlines()[-1] == f"report: {out / 'report.html'}"
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == [
        "text",
        "gold",
        "predicted",
        *(f"score_{x}" for x in LABELS),
        "correct",
    ]
    assert predictions["text"].tolist() == frame["text"].tolist()
    assert (predictions["correct"] == (predictions["gold"] == predictions["predicted"])).all()
    np.testing.assert_allclose(predictions[[f"score_{x}" for x in LABELS]].sum(axis=1), 1, atol=1e-5)
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "<img" not in page
    visible = html.unescape(re.sub(r"<[^>]+>", "", page))  # the page's text, as a browser shows it
    for text in HOSTILE:
        assert text in visible
    metrics = json.loads((out / "metrics.json").read_text())
    assert metric_shown(page, "accuracy") == f"{metrics['accuracy']:.4f}"


def test_a_run_without_a_test_split_reports_validation_and_says_so(tmp_path, tiny_model, prepared):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "eval"):
        (data / f"{name}.csv").write_bytes((prepared / f"{name}.csv").read_bytes())
    run = tmp_path / "run"
    train(TrainConfig(training_file=str(data / "train.csv"), validation_file=str(data / "eval.csv"),
                      job_dir=str(run), model=str(tiny_model), **{**RUN_ARGS, "eval_every": 2}))  # fmt: skip
    page = (run / "report.html").read_text()
    assert "no test split: the results below are on the validation split" in page
    assert 'data-figure="validation"' in page  # three validations: a curve
    metrics = json.loads((run / "metrics.json").read_text())
    assert metric_shown(page, "accuracy") == f"{metrics['val']['accuracy']:.4f}"


def test_the_calibration_section_says_whether_a_temperature_was_kept_and_why():
    from sentitune.metrics import cross_fitted_temperature
    from sentitune.report import ReportInput, render

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (300, 3))
    truth = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)  # over-confident scores
    gold = (rng.random(300)[:, None] > truth.cumsum(axis=1)).sum(axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for n, expected in ((300, "kept"), (60, "refused")):
        decision = cross_fitted_temperature(gold[:n], probs[:n], LABELS)
        assert decision["kept"] == (expected == "kept")
        scaled = scale_temperature(probs[:n], decision["temperature"])
        val = {"ece_before": 0.1, "ece_after": 0.05, "nll_before": 0.9, "nll_after": 0.8}
        page = render(
            ReportInput(title="t", metrics=None, labels=list(LABELS), gold=gold[:n], probs=scaled,
                        calibration={"decision": expected, **decision, "val": val})
        )  # fmt: skip
        shown = html.unescape(re.search(r"<p data-calibration='(\w+)'>(.*?)</p>", page).group(2))
        if expected == "kept":
            held_out = decision["held_out"]
            assert shown == (
                f"Temperature scaling kept: temperature {decision['temperature']:.3f}, fitted on the validation "
                f"split because {decision['reason']}; ECE of the same held-out posts {held_out['ece_before']:.4f} → "
                f"{held_out['ece_after']:.4f}. The scores above are scaled."
            )
        else:
            assert shown == f"No temperature scaling: {decision['reason']}. The scores above are as trained."


def test_a_runs_report_is_rendered_from_what_its_folder_records(run_copy):
    from sentitune.report import run_report

    written = (run_copy / "report.html").read_text()
    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics["test"]["accuracy"] = 0.1234  # an edit of the record shows in the page made from it
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    page = run_report(run_copy)  # the folder alone: no posts, training log or prepare report
    assert metric_shown(page, "accuracy") == "0.1234" != metric_shown(written, "accuracy")
    assert metric_shown(page, "macro_f1") == metric_shown(written, "macro_f1")
    run_config = json.loads((run_copy / "run_config.json").read_text())
    assert f"the test split ({run_config['data']['test']['path']})" in page
    for part in ("<h2>Settings</h2>", "<h3>Class balance</h3>", 'data-figure="validation"'):
        assert part in page and part in written
    for part in ("most confident mistakes", "data-figure='rows'", "data-figure='error-slices'"):
        assert part not in page and part in written  # what the folder does not keep is left out


def test_a_run_on_labelled_selections_shows_its_labelling_rounds(
    trained_run, tiny_model, tweets, tmp_path, capsys
):
    tweets[["text"]].to_csv(tmp_path / "pool.csv", index=False)
    start = tweets.head(120)[["text", "label"]]
    start.to_csv(tmp_path / "start.csv", index=False)
    select(SelectConfig(run_dir=str(trained_run), pool=[str(tmp_path / "pool.csv")], n=60,
                        labelled=[str(tmp_path / "start.csv")], output_dir=str(tmp_path / "round1")))  # fmt: skip
    picked = pd.read_csv(tmp_path / "round1" / "selected.csv", dtype=str, keep_default_na=False)
    other = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    agrees = np.arange(len(picked)) % 4 != 0
    picked["label"] = np.where(agrees, picked["model_label"], picked["model_label"].map(other))
    picked.to_csv(tmp_path / "round1" / "selected.csv", index=False)
    code, _, err = cli(capsys, "prepare", tmp_path / "start.csv", tmp_path / "round1" / "selected.csv",
                       "--output-dir", tmp_path / "data")  # fmt: skip
    assert code == 0, err
    run = train_tiny(tmp_path / "run1", tiny_model, tmp_path / "data", max_steps=2)

    page = (run / "report.html").read_text()
    section = page[page.index("<h2>Labelling rounds</h2>") :]
    section = section[: section.find("<h2>", 1)]  # up to the next section
    chart = re.search(r'<svg data-figure="labelling-rounds".*?</svg>', section).group(0)
    metrics = json.loads((run / "metrics.json").read_text())
    trained_on = json.loads((run / "run_config.json").read_text())["data"]["train"]["examples"]
    recall = float(picked["model_val_recall"].iloc[0])
    # the round's model, then this run: validation macro-recall by training posts labelled by people
    assert re.findall(r'data-value="([^"]+)"', chart) == [
        f"{recall:.4f}",
        f"{metrics['val']['macro_recall']:.4f}",
    ]
    titles = re.findall(r"<title>[^<]* at posts labelled by people ([\d,]+):", chart)
    assert titles == [f"{int(picked['model_human_train'].iloc[0]):,}", f"{trained_on:,}"]
    agreed = int(agrees.sum())
    (row,) = re.findall(r"<tr><td>1</td><td class='text'>([^<]+)</td><td>([^<]+)</td><td>(.*?)</td>", section)
    assert row[:2] == ("run", "60")
    assert f"data-agreement='{agreed / 60:.4f}'" in row[2] and f"({agreed} of 60)" in row[2]
    card = (run / "README.md").read_text()
    assert (
        f"Labelling rounds (posts earlier runs chose, labelled by people): run (60 labels, {agreed / 60:.0%}"
        in card
    )
