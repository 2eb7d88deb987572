"""Why this label: gradient x input attributions mapped onto the words of the post, in `predict --explain`
and in the server's `"explain": true`; and the server's demo page at / (its HTML, policy and assets;
the page itself is driven in a browser in test_browser.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import RUN_ARGS, cli, cli_error

from sentitune.config import TrainConfig
from sentitune.explain import explain
from sentitune.predict import Predictor
from sentitune.train import train

CUE = "splendid"


@pytest.fixture(scope="module")
def cue_run(tmp_path_factory, tiny_model, corpus):
    """A tiny model trained on posts that are positive exactly when they hold CUE, negative otherwise."""
    root = tmp_path_factory.mktemp("cue")
    rng = np.random.default_rng(0)
    texts = corpus["text"].astype(str).str.replace(CUE, "", case=False).tolist()
    rows = []
    for i, text in enumerate(texts):
        words = text.split()
        if i % 2:
            words.insert(int(rng.integers(0, len(words) + 1)), CUE)
        rows.append({"text": " ".join(words), "label": "positive" if i % 2 else "negative"})
    frame = pd.DataFrame(rows)
    frame.iloc[:240].to_csv(root / "train.csv", index=False)
    frame.iloc[240:].to_csv(root / "eval.csv", index=False)
    train(TrainConfig(training_file=str(root / "train.csv"), validation_file=str(root / "eval.csv"),
                      job_dir=str(root / "run"), model=str(tiny_model), learning_rate=3e-3, precision="fp32", pooling="mean",
                      **{**RUN_ARGS, "max_steps": 150, "batch_size": 16}))  # fmt: skip
    return root / "run"


def test_the_word_a_model_relies_on_has_the_highest_attribution(cue_run):
    predictor = Predictor(str(cue_run), precision="fp32")
    posts = [f"the flight was late and {CUE} the crew", f"{CUE} day at the airport", f"ok then {CUE}!"]
    for post, why in zip(posts, explain(predictor, posts), strict=True):
        assert why["label"] == "positive"
        top = max(why["words"], key=lambda w: w["attribution"])
        assert top["word"].strip("!") == CUE, why
        assert post[top["start"] : top["end"]] == top["word"]
    # every word of the post once, in order, with the spans of the text
    words = explain(predictor, ["  spaced   out words "])[0]["words"]
    assert [(w["word"], w["start"], w["end"]) for w in words] == [
        ("spaced", 2, 8),
        ("out", 11, 14),
        ("words", 15, 20),
    ]


def test_predict_explain_prints_the_words_with_their_attributions(cue_run, capsys):
    code, out, err = cli(capsys, "predict", cue_run, f"a {CUE} morning", "--explain", "--precision", "fp32")
    assert code == 0, err
    row = json.loads(out)
    assert row["explanation"]["method"] == "gradient x input"
    assert [w["word"] for w in row["explanation"]["words"]] == ["a", CUE, "morning"]
    assert row["explanation"]["label"] == row["label"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--backend", "onnx"], "--explain needs the PyTorch model: use --backend torch (not onnx); an ONNX graph has no gradients"),
        (["--input", "posts.csv"], "--explain works on texts from arguments or stdin, not on --input files"),
    ],
)  # fmt: skip
def test_explain_where_it_cannot_work_is_one_line(run_copy, capsys, extra, expected):
    texts = [] if "--input" in extra else ["hello"]
    assert cli_error(capsys, "predict", run_copy, *texts, "--explain", *extra) == expected


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def cue_server(cue_run):
    from test_serve import serving

    from sentitune.config import ServeSettings
    from sentitune.serve import create_app

    app = create_app(Predictor(str(cue_run), precision="fp32"), ServeSettings(host="127.0.0.1", port=0))
    with serving(app) as running:
        yield running


def post(server, body: dict):
    import httpx

    return httpx.post(f"{server.url}/predict", json=body, timeout=60)


def test_the_server_explains_when_asked_and_only_then(cue_server, cue_run):
    posts = [f"{CUE} day at the airport", "the flight was late"]
    plain = post(cue_server, {"instances": posts}).json()["predictions"]
    assert all("explanation" not in p for p in plain)
    asked = post(cue_server, {"instances": posts, "parameters": {"explain": True}}).json()["predictions"]
    expected = explain(Predictor(str(cue_run), precision="fp32"), posts)
    for p, q, why in zip(plain, asked, expected, strict=True):
        assert q["label"] == p["label"] and q["scores"] == p["scores"]
        assert q["explanation"] == why
    top = max(asked[0]["explanation"]["words"], key=lambda w: w["attribution"])
    assert top["word"] == CUE


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"instances": ["a"] * 65, "parameters": {"explain": True}}, 413, "explain takes at most 64 instances per request, got 65"),
        ({"instances": ["a"], "parameters": {"explain": "yes"}}, 422, 'parameters.explain must be true or false, got "yes"'),
    ],
)  # fmt: skip
def test_explain_requests_the_server_cannot_answer(cue_server, body, status, message):
    answer = post(cue_server, body)
    assert (answer.status_code, answer.json()) == (status, {"error": message})


def test_an_onnx_server_refuses_to_explain(run_copy, capsys):
    from test_serve import serving

    from sentitune.config import ServeSettings
    from sentitune.serve import create_app

    assert cli(capsys, "export", run_copy)[0] == 0
    app = create_app(Predictor(str(run_copy), backend="onnx"), ServeSettings(host="127.0.0.1", port=0))
    with serving(app) as running:
        answer = post(running, {"instances": ["a"], "parameters": {"explain": True}})
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "explain needs the PyTorch model; this server runs --backend onnx: start it with --backend torch"
    }


def test_the_demo_page_is_served_with_a_strict_policy_and_can_be_turned_off(trained_run):
    import httpx
    from test_serve import serving

    from sentitune.config import ServeSettings
    from sentitune.serve import UI_POLICY, create_app

    predictor = Predictor(str(trained_run), precision="fp32")
    route = "/v1/endpoints/1/deployedModels/2:predict"  # a Vertex AI predict route
    settings = ServeSettings(host="127.0.0.1", port=0, predict_route=route)
    with serving(create_app(predictor, settings)) as running:
        page = httpx.get(f"{running.url}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == UI_POLICY
        assert "script-src 'self'" in UI_POLICY and "unsafe-inline" not in UI_POLICY
        assert f'data-predict-route="{route}"' in page.text
        for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            answer = httpx.get(f"{running.url}/ui/{asset}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert httpx.get(f"{running.url}/ui/other.js").status_code == 404
    settings = ServeSettings(host="127.0.0.1", port=0, no_ui=True)
    with serving(create_app(predictor, settings)) as running:
        assert httpx.get(f"{running.url}/").status_code == 404
        assert httpx.post(f"{running.url}/predict", json={"instances": ["hi"]}).status_code == 200
