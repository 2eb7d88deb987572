"""`train --pooling mean`: the head reads the mean of the post's token states, the run folder says so,
and every loader (predict, continued training, ONNX export) honours it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, cli_error, train_tiny
from transformers import AutoModelForSequenceClassification, pipeline

import sentitune
from sentitune import modeling_sentitune
from sentitune.builtin import default_model
from sentitune.model import (
    ENCODER_TYPE_KEY,
    MEAN_POOLED_TYPE,
    MODELING_FILE,
    POOLING_KEY,
    MeanPooled,
    trained_pooling,
)
from sentitune.runfolder import load_run
from sentitune.scoring import Predictor

POSTS = ["@united thanks for the quick rebooking, great crew!", "ok", "worst. airline. ever. " * 6]


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_model, prepared):
    return train_tiny(tmp_path_factory.mktemp("mean") / "run", tiny_model, prepared, pooling="mean")


def test_the_run_folder_records_mean_pooling(mean_run, trained_run):
    config = json.loads((mean_run / "config.json").read_text())
    assert config[POOLING_KEY] == "mean"
    assert POOLING_KEY not in json.loads((trained_run / "config.json").read_text())
    run_config = json.loads((mean_run / "run_config.json").read_text())
    assert run_config["train"]["pooling"] == "mean" and run_config["model"]["pooling"] == "mean"


def test_the_head_reads_the_mean_of_the_unpadded_token_states(mean_run):
    classifier = load_run(str(mean_run))
    model = classifier.model
    assert isinstance(model, MeanPooled) and model.base_model.pooler is None
    enc = classifier.tokenizer(POSTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        for i, post in enumerate(POSTS):  # each post alone: no padding at all
            one = classifier.tokenizer([post], return_tensors="pt")
            states = model.base_model(**one).last_hidden_state[0]
            expected = model.inner.classifier(states.mean(dim=0))
            torch.testing.assert_close(logits[i], expected, rtol=1e-5, atol=1e-5)


def test_plain_transformers_refuses_a_mean_pooled_run_without_its_code(mean_run):
    """Never [CLS] through a random pooler: without the opt-in, loading fails and names the fix."""
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModelForSequenceClassification.from_pretrained(mean_run)
    config = json.loads((mean_run / "config.json").read_text())
    assert config["model_type"] == MEAN_POOLED_TYPE and config[ENCODER_TYPE_KEY] == "bert"
    assert (mean_run / MODELING_FILE).read_bytes() == (
        Path(sentitune.__file__).parent / MODELING_FILE
    ).read_bytes()
    assert (
        modeling_sentitune.MODEL_TYPE == MEAN_POOLED_TYPE
        and modeling_sentitune.ENCODER_TYPE_KEY == ENCODER_TYPE_KEY
    )


def test_sentitune_never_runs_or_asks_to_run_the_folders_code(mean_run, monkeypatch):
    """transformers asks on the terminal (input()) before it runs a folder's code, also when only the
    tokenizer is read; sentitune builds the encoder's own classes and never gets there."""

    def asked(*args):
        pytest.fail("transformers asked whether to run the run folder's code")

    monkeypatch.setattr("builtins.input", asked)
    assert isinstance(load_run(str(mean_run)).model, MeanPooled)
    assert load_run(str(mean_run), with_model=False).tokenizer.is_fast  # the ONNX backends' path


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_transformers_pipeline_gives_sentitunes_scores(
    pooling, mean_run, trained_run, monkeypatch, tmp_path
):
    """`pipeline("text-classification")` on a run folder (mean pooling with trust_remote_code=True), in a
    fresh module cache, scores as `sentitune predict` does (fp32)."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    run = mean_run if pooling == "mean" else trained_run
    classify = pipeline(
        "text-classification", model=str(run), top_k=None, device="cpu", trust_remote_code=True
    )
    expected = Predictor(str(run), device="cpu", precision="fp32").predict(POSTS)
    for post, want in zip(POSTS, expected, strict=True):  # as written: the folder's tokenizer rewrites them
        got = {row["label"]: row["score"] for row in classify([post])[0]}
        assert got == pytest.approx(want.scores, abs=1e-5), post
    if pooling == "mean":  # the head that reads [CLS] through a random pooler would score otherwise
        assert type(classify.model).__name__ == "SentituneMeanPooledForSequenceClassification"


def test_the_folders_code_cuts_a_long_input_where_the_run_cuts_it(mean_run):
    """An uncut batch (a short post padded beside a long one) scores as the tokenizer's cut batch: the
    model keeps each row's first max_length - 1 tokens and its closing one, and pools over those alone."""
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(mean_run, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(mean_run, trust_remote_code=False)  # one that does not cut
    posts = ["ok", "worst. airline. ever. " * 100, "fine " * 99]
    uncut = tokenizer(posts, padding=True, truncation=False, return_tensors="pt")
    cut = tokenizer(posts, padding=True, truncation=True, return_tensors="pt")
    assert uncut["input_ids"].shape[1] > 512 and cut["input_ids"].shape[1] == 100
    kept = modeling_sentitune.cut_to(100, dict(uncut))
    assert kept.keys() == cut.keys() and all(torch.equal(kept[name], cut[name]) for name in cut)
    with torch.no_grad():
        torch.testing.assert_close(model(**uncut).logits, model(**cut).logits, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        torch.softmax(model(**uncut).logits, -1).detach().numpy(),
        Predictor(str(mean_run), device="cpu", precision="fp32").probabilities(posts),
        atol=1e-5,
    )


def test_a_run_of_the_earlier_layout_still_loads_with_mean_pooling(mean_run, tmp_path):
    """Mean-pooled runs written before the folder had its own model_type: BERT's model_type and the
    pooling key only. sentitune still reads them with mean pooling."""
    import shutil

    old = shutil.copytree(mean_run, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    config["model_type"] = config.pop(ENCODER_TYPE_KEY)
    config["architectures"] = ["BertForSequenceClassification"]
    del config["auto_map"]
    (old / "config.json").write_text(json.dumps(config))
    (old / MODELING_FILE).unlink()
    classifier = load_run(str(old))
    assert isinstance(classifier.model, MeanPooled)
    np.testing.assert_allclose(
        Predictor(str(old), device="cpu", precision="fp32").probabilities(POSTS),
        Predictor(str(mean_run), device="cpu", precision="fp32").probabilities(POSTS),
        atol=1e-6,
    )


def test_predict_and_onnx_export_use_mean_pooling(mean_run, tmp_path):
    import shutil

    from sentitune.export import ExportConfig, export_onnx

    run = shutil.copytree(mean_run, tmp_path / "run")
    torch_probs = Predictor(str(run), device="cpu", precision="fp32").probabilities(POSTS)
    classifier = load_run(str(run))
    with torch.no_grad():
        for i, post in enumerate(POSTS):
            one = classifier.tokenizer([classifier.normalization.apply(post)], return_tensors="pt")
            logits = classifier.model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits
            probs = logits.softmax(-1)[0].numpy()
            np.testing.assert_allclose(torch_probs[i], probs, atol=1e-5)
    export_onnx(ExportConfig(run_dir=str(run), parity_examples=100))
    report = json.loads((run / "onnx" / "export_report.json").read_text())
    assert report["models"]["fp32"]["label_agreement"] == 1.0
    onnx_probs = Predictor(str(run), backend="onnx").probabilities(POSTS)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)


def test_continuing_a_mean_pooled_run_keeps_mean_pooling(mean_run, prepared, tmp_path, capsys):
    message = cli_error(
        capsys, "train", "--data", prepared, "--model", mean_run, "--job-dir", tmp_path / "next",
        "--max-steps", "1", "--pooling", "cls",
    )  # fmt: skip
    assert message == f"{mean_run} was trained with --pooling mean; continue it with --pooling mean or auto"
    assert not (tmp_path / "next").exists()
    for pooling in ([], ["--pooling", "mean"]):  # auto (the default) follows the run
        job = tmp_path / f"next{len(pooling)}"
        code, _, _ = cli(
            capsys, "train", "--data", prepared, "--model", mean_run, "--job-dir", job,
            "--max-steps", "1", "--train-eval-examples", "0", *pooling,
        )  # fmt: skip
        assert code == 0
        assert json.loads((job / "config.json").read_text())[POOLING_KEY] == "mean"


def test_auto_pooling_follows_how_the_encoder_was_trained(tiny_model, prepared, tmp_path, capsys):
    import shutil

    assert trained_pooling(default_model()) == "mean"  # the embedded sentence-transformers MiniLM
    assert trained_pooling(str(tiny_model)) == "cls"  # a plain BERT folder
    sentence_model = shutil.copytree(tiny_model, tmp_path / "st-model")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]  # fmt: skip
    (sentence_model / "modules.json").write_text(json.dumps(modules))
    (sentence_model / "1_Pooling").mkdir()
    (sentence_model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    for model, expected in ((sentence_model, "mean"), (tiny_model, "cls")):
        job = tmp_path / f"run-{expected}"
        code, _, _ = cli(
            capsys, "train", "--data", prepared, "--model", model, "--job-dir", job, "--pooling", "auto",
            "--max-steps", "1", "--train-eval-examples", "0",
        )  # fmt: skip
        assert code == 0
        assert json.loads((job / "run_config.json").read_text())["model"]["pooling"] == expected
        assert json.loads((job / "config.json").read_text()).get(POOLING_KEY, "cls") == expected
