"""`sentitune export`: ONNX (fp32 and int8) with dynamic axes, parity with PyTorch, and the ONNX backend
of predict, evaluate and serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from helpers import STARTUP_TIMEOUT_S, cli, cli_error, entries, free_port, sentitune_serve

from sentitune.scoring import Predictor

POSTS = [
    "@united thanks for the quick rebooking, great crew!",
    "My flight got Cancelled Flightled again and nobody at the desk cares",
    "ok",
    "#DeflateGate is the only thing on the news tonight " * 8,
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_run):
    """A copy of the session's run with its fp32 and int8 ONNX export."""
    import shutil

    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run, run)
    from sentitune.export import ExportConfig, export_onnx

    export_onnx(ExportConfig(run_dir=str(run), quantize="int8", parity_examples=300))
    return run


def exported_files(run: Path) -> set[str]:
    """The files of a run's onnx/ folder (not the hidden record of the command that wrote it)."""
    return {name for name in entries(run / "onnx") if not name.startswith(".")}


def test_export_writes_both_models_and_the_parity_report(exported):
    assert exported_files(exported) == {
        "model.onnx",
        "model_int8.onnx",
        "export_report.json",
        "tokenizer.json",
    }
    report = json.loads((exported / "onnx" / "export_report.json").read_text())
    assert report["tokenizer"] == "tokenizer.json" and report["max_length"] == 100
    # the run's own tokenizer: its normalisation in the normalizer, cutting at the run's max_length
    assert json.loads((exported / "onnx" / "tokenizer.json").read_text()) == json.loads(
        (exported / "tokenizer.json").read_text()
    )
    fp32, int8 = report["models"]["fp32"], report["models"]["int8"]
    assert report["parity_data"].endswith("eval.csv")  # the run's validation split
    assert fp32["examples"] == int8["examples"] == len(pd.read_csv(report["parity_data"]))
    assert fp32["label_agreement"] == 1.0 and fp32["max_prob_diff"] <= 1e-4
    assert int8["label_agreement"] >= 0.95
    assert int8["bytes"] < fp32["bytes"]
    assert abs(fp32["macro_f1"] - fp32["reference_macro_f1"]) < 1e-6


def test_onnx_graph_has_dynamic_batch_and_sequence_axes(exported):
    graph = onnx.load(str(exported / "onnx" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)


def test_onnx_backend_gives_pytorch_probabilities(exported):
    torch_probs = Predictor(str(exported), device="cpu", precision="fp32").probabilities(POSTS)
    onnx_probs = Predictor(str(exported), backend="onnx").probabilities(POSTS)
    int8_probs = Predictor(str(exported), backend="onnx-int8", batch_size=3).probabilities(POSTS)
    assert onnx_probs.shape == (len(POSTS), 3)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    np.testing.assert_allclose(int8_probs.sum(axis=1), 1, atol=1e-5)
    assert np.abs(int8_probs - torch_probs).max() < 0.05


def test_predict_and_evaluate_with_the_onnx_backend(exported, capsys, tmp_path):
    code, out, _ = cli(capsys, "predict", str(exported), "--backend", "onnx", *POSTS[:2])
    rows = [json.loads(line) for line in out.splitlines()]
    expected = Predictor(str(exported), device="cpu", precision="fp32").predict(POSTS[:2])
    assert code == 0 and [r["label"] for r in rows] == [p.label for p in expected]
    for row, p in zip(rows, expected, strict=True):
        assert row["scores"] == pytest.approx(p.scores, abs=1e-4)

    val = json.loads((exported / "run_config.json").read_text())["data"]["val"]["path"]
    code, out, _ = cli(capsys, "evaluate", str(exported), "--data", val, "--backend", "onnx-int8")
    metrics = json.loads((exported / "evaluation-eval-onnx-int8" / "metrics.json").read_text())
    assert code == 0 and metrics["backend"] == "onnx-int8" and metrics["examples"] > 0


def test_export_refuses_to_replace_an_export(exported, capsys):
    before = (exported / "onnx" / "model.onnx").read_bytes()
    message = cli_error(capsys, "export", str(exported))
    assert message == (
        f"{exported / 'onnx'} already holds an ONNX export (export_report.json, model.onnx, model_int8.onnx); "
        "pass --overwrite to replace it or choose another folder"
    )
    assert (exported / "onnx" / "model.onnx").read_bytes() == before


def test_backend_without_an_export_names_the_command(run_copy, capsys):
    message = cli_error(capsys, "predict", str(run_copy), "--backend", "onnx-int8", "hello")
    assert message == (
        f"{run_copy}/onnx/model_int8.onnx not found; run `sentitune export {run_copy} --quantize int8` first, "
        "or use --backend torch"
    )


def test_export_without_reachable_parity_data_asks_for_it(run_copy, capsys, tmp_path):
    config = json.loads((run_copy / "run_config.json").read_text())
    for split in config["data"].values():
        split["path"] = str(tmp_path / "gone.csv")
    (run_copy / "run_config.json").write_text(json.dumps(config))
    message = cli_error(capsys, "export", str(run_copy))
    assert message == (
        f"no posts to check the export on: the run's data ({tmp_path / 'gone.csv'}) is not readable here; "
        "pass --parity-data FILE (a labelled CSV/JSONL/Parquet file)"
    )
    assert not (run_copy / "onnx").exists()

    posts = pd.DataFrame({"text": POSTS, "label": ["positive", "negative", "neutral", "neutral"]})
    posts.to_csv(tmp_path / "posts.csv", index=False)
    code, out, _ = cli(
        capsys, "export", str(run_copy), "--parity-data", str(tmp_path / "posts.csv"), "--quantize", "int8"
    )
    report = json.loads((run_copy / "onnx" / "export_report.json").read_text())
    assert code == 0 and report["models"]["fp32"]["examples"] == len(POSTS)
    assert "labels agree with PyTorch on 100.00% of 4 posts" in out

    # exporting again without int8 leaves no stale int8 model behind
    code, _, _ = cli(
        capsys, "export", str(run_copy), "--parity-data", str(tmp_path / "posts.csv"), "--overwrite"
    )
    assert code == 0 and exported_files(run_copy) == {"model.onnx", "export_report.json", "tokenizer.json"}


def test_a_model_that_does_not_match_is_not_written(run_copy, capsys, monkeypatch, tmp_path):
    """Parity is checked against the run's own weights: an export of other weights must fail."""
    from sentitune import export
    from sentitune.builtin import build_random_bert
    from sentitune.model import load_classifier

    other = load_classifier(build_random_bert(tmp_path / "other", layers=2, hidden=32, heads=2, seed=7))
    real_export = export.export_graph
    monkeypatch.setattr(export, "export_graph", lambda classifier, path: real_export(other, path))
    message = cli_error(capsys, "export", str(run_copy), "--parity-examples", "200")
    assert message.startswith("the ONNX model does not match the PyTorch model: fp32 changed")
    assert message.endswith("nothing written")
    assert not (run_copy / "onnx").exists()
    assert not [p for p in run_copy.parent.iterdir() if "staging" in p.name]


def test_an_int8_model_that_disagrees_is_not_written(run_copy, capsys, monkeypatch, tmp_path):
    """int8 may move a few labels near a class boundary, not most of them: a quantised copy of other
    weights must fail the check, and nothing is written (the fp32 model neither)."""
    from sentitune import export
    from sentitune.builtin import build_random_bert
    from sentitune.model import load_classifier

    other = load_classifier(build_random_bert(tmp_path / "other", layers=2, hidden=32, heads=2, seed=7))
    real_export, real_quantize = export.export_graph, export.quantize_int8

    def quantize_other(source, dest):
        real_export(other, tmp_path / "other.onnx")
        real_quantize(tmp_path / "other.onnx", dest)

    monkeypatch.setattr(export, "quantize_int8", quantize_other)
    message = cli_error(capsys, "export", str(run_copy), "--quantize", "int8", "--parity-examples", "200")
    assert message.startswith("the ONNX model does not match the PyTorch model: int8 labels agree on ")
    assert "(allowed: ≥ 95%)" in message and "fp32" not in message
    assert message.endswith("nothing written")
    assert not (run_copy / "onnx").exists()


def test_a_real_server_answers_with_the_int8_model(exported):
    import signal
    import time

    import httpx

    port = free_port()
    proc = sentitune_serve(exported, "--host", "127.0.0.1", "--port", port, "--backend", "onnx-int8")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the server did not answer its health route"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": POSTS}, timeout=30)
        assert r.status_code == 200, r.text
        expected = Predictor(str(exported), backend="onnx-int8").predict(POSTS)
        got = r.json()["predictions"]
        assert [p["label"] for p in got] == [e.label for e in expected]
        for p, e in zip(got, expected, strict=True):
            assert p["scores"] == pytest.approx(e.scores, abs=1e-5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
