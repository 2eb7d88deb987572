"""Why this label: each word's attribution (by default what removing it does to the label's score), in
`predict --explain` and in the server's `"explain": true`; that the explanations agree with the model;
and the server's demo page at / (its HTML, policy and assets; the page itself is driven in a browser in
test_browser.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import RUN_ARGS, cli, cli_error, serving

from sentitune.config import TrainConfig
from sentitune.errors import SentituneError
from sentitune.explain import GRADIENT_X_INPUT, INTEGRATED_GRADIENTS, OCCLUSION, WORD, explain
from sentitune.scoring import Predictor
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


# Not gradient x input: on this model it gives the cue a negative attribution where it opens a post.
@pytest.mark.parametrize("method", [OCCLUSION, INTEGRATED_GRADIENTS])
def test_the_word_a_model_relies_on_has_the_highest_attribution(cue_run, method):
    if method == INTEGRATED_GRADIENTS:
        pytest.importorskip("captum", reason="integrated gradients need pip install 'sentitune[explain]'")
    predictor = Predictor(str(cue_run), precision="fp32")
    posts = [f"the flight was late and {CUE} the crew", f"{CUE} day at the airport", f"ok then {CUE}!"]
    for post, why in zip(posts, explain(predictor, posts, method=method), strict=True):
        assert why["label"] == "positive" and why["method"] == method
        top = max(why["words"], key=lambda w: w["attribution"])
        assert top["word"].strip("!") == CUE, why
        assert post[top["start"] : top["end"]] == top["word"]
    # every word of the post once, in order, with the spans of the text
    words = explain(predictor, ["  spaced   out words "], method=method)[0]["words"]
    assert [(w["word"], w["start"], w["end"]) for w in words] == [
        ("spaced", 2, 8),
        ("out", 11, 14),
        ("words", 15, 20),
    ]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, tiny_model, corpus):
    """A tiny model trained on the crowd-labelled posts: words with real, mixed signal."""
    root = tmp_path_factory.mktemp("corpus")
    frame = corpus.rename(columns={"sentiment": "label"})[["text", "label"]]
    frame.iloc[:240].to_csv(root / "train.csv", index=False)
    frame.iloc[240:].to_csv(root / "eval.csv", index=False)
    train(TrainConfig(training_file=str(root / "train.csv"), validation_file=str(root / "eval.csv"),
                      job_dir=str(root / "run"), model=str(tiny_model), learning_rate=3e-3, precision="fp32", pooling="mean",
                      **{**RUN_ARGS, "max_steps": 150, "batch_size": 16}))  # fmt: skip
    return root


def removal_moves(predictor, text: str) -> tuple[int, np.ndarray]:
    """The label's index, and per word the drop of its probability when the word is deleted from the post
    as written, scored by the Predictor (the path every prediction takes)."""
    spans = [m.span() for m in WORD.finditer(text)]
    probs = predictor.probabilities([text, *(text[:s] + text[e:] for s, e in spans)])
    label = int(probs[0].argmax())
    return label, probs[0, label] - probs[1:, label]


def sign_agreement(predictor, texts: list[str], method: str, epsilon: float = 0.01) -> tuple[float, int, int]:
    """The share of the words whose removal moves the label's probability by more than `epsilon` whose
    attribution has the sign of that move, how many words that is, and how many posts were explained
    for another label than the Predictor's (the gradient methods read the fp32 model) and left out."""
    agree = counted = other = 0
    for text, why in zip(texts, explain(predictor, texts, method=method), strict=True):
        label, moves = removal_moves(predictor, text)
        if why["label"] != predictor.labels[label]:
            other += 1
            continue
        attributions = np.array([w["attribution"] for w in why["words"]])
        decisive = np.abs(moves) > epsilon
        counted += int(decisive.sum())
        agree += int((np.sign(attributions[decisive]) == np.sign(moves[decisive])).sum())
    return agree / counted, counted, other


# Occlusion's sign agreement with word removal, measured by benchmarks/faithfulness.py on TweetEval
# validation tweets (a MiniLM run) and by this test on the held-out posts below: 1.000 both times (it is
# the removal itself). The floor sits one point under it, for ties at the epsilon, and far above what the
# gradient methods measured (here integrated gradients 0.70, gradient x input 0.66; on the MiniLM run
# 0.82 and 0.41): a default that stops agreeing with the model fails.
SIGN_AGREEMENT_FLOOR = 0.99


def test_the_shipped_explanation_agrees_in_sign_with_removing_each_word(corpus_run):
    predictor = Predictor(str(corpus_run / "run"))  # the precision a server would run
    texts = pd.read_csv(corpus_run / "eval.csv")["text"].tolist()
    agreement, counted, other = sign_agreement(predictor, texts, OCCLUSION)
    assert counted >= 100 and other == 0  # enough words move the score for the share to mean something
    assert agreement >= SIGN_AGREEMENT_FLOOR
    below, _, _ = sign_agreement(predictor, texts, GRADIENT_X_INPUT)
    assert below < SIGN_AGREEMENT_FLOOR  # the floor tells a faithful method from one that is not


def test_an_occlusion_attribution_is_what_removing_the_word_does_to_the_score(corpus_run):
    predictor = Predictor(str(corpus_run / "run"), precision="fp32")
    post = "@united lost my bag AGAIN 😡 http://t.co/abc"
    (why,) = explain(predictor, [post])
    label, moves = removal_moves(predictor, post)
    assert why["label"] == predictor.labels[label]
    assert why["score"] == pytest.approx(predictor.probabilities([post])[0, label], abs=1e-6)
    np.testing.assert_allclose([w["attribution"] for w in why["words"]], moves, atol=1e-6)
    # spans count code points of the post as written: the emoji is one character
    assert [(w["word"], w["start"], w["end"]) for w in why["words"]][4:6] == [
        ("AGAIN", 20, 25),
        ("😡", 26, 27),
    ]
    assert all(post[w["start"] : w["end"]] == w["word"] for w in why["words"])


def test_words_past_the_max_length_are_not_read_and_get_zero(corpus_run):
    predictor = Predictor(str(corpus_run / "run"), precision="fp32", max_length=16)
    post = "great " * 10 + "awful " * 30
    (why,) = explain(predictor, [post])
    attributions = [w["attribution"] for w in why["words"]]
    assert len(attributions) == 40
    assert any(attributions[:14]) and not any(attributions[14:])  # [CLS] + 14 words + [SEP] are read
    start, end = why["words"][20]["start"], why["words"][20]["end"]
    probs = predictor.probabilities([post, post[:start] + post[end:]])
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)  # removing an unread word changes nothing


def test_an_unknown_method_is_one_line(corpus_run):
    predictor = Predictor(str(corpus_run / "run"), precision="fp32")
    with pytest.raises(SentituneError) as caught:
        explain(predictor, ["hello"], method="saliency")
    assert str(caught.value) == (
        "unknown explanation method 'saliency'; choose one of occlusion, integrated gradients, gradient x input"
    )


def test_predict_explain_prints_the_words_with_their_attributions(cue_run, capsys):
    code, out, err = cli(capsys, "predict", cue_run, f"a {CUE} morning", "--explain", "--precision", "fp32")
    assert code == 0, err
    row = json.loads(out)
    assert row["explanation"]["method"] == "occlusion"
    assert [w["word"] for w in row["explanation"]["words"]] == ["a", CUE, "morning"]
    assert row["explanation"]["label"] == row["label"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--input", "posts.csv"], "--explain works on texts from arguments or stdin, not on --input files"),
    ],
)  # fmt: skip
def test_explain_where_it_cannot_work_is_one_line(run_copy, capsys, extra, expected):
    texts = [] if "--input" in extra else ["hello"]
    assert cli_error(capsys, "predict", run_copy, *texts, "--explain", *extra) == expected


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def cue_server(cue_run):
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


def test_an_onnx_server_explains_with_the_export_it_scores_with(run_copy, capsys):
    from sentitune.config import ServeSettings
    from sentitune.serve import create_app

    assert cli(capsys, "export", run_copy)[0] == 0
    onnx = Predictor(str(run_copy), backend="onnx")
    posts = ["@united lost my bag AGAIN 😡 http://t.co/abc", "what a lovely crew"]
    with serving(create_app(onnx, ServeSettings(host="127.0.0.1", port=0))) as running:
        answer = post(running, {"instances": posts, "parameters": {"explain": True}})
    assert answer.status_code == 200
    for text, prediction in zip(posts, answer.json()["predictions"], strict=True):
        why = prediction["explanation"]
        label, moves = removal_moves(onnx, text)
        assert why["method"] == "occlusion" and why["label"] == prediction["label"] == onnx.labels[label]
        np.testing.assert_allclose([w["attribution"] for w in why["words"]], moves, atol=1e-5)
    with pytest.raises(SentituneError, match="^the gradient x input explanation needs the PyTorch model"):
        explain(onnx, posts, method=GRADIENT_X_INPUT)


def test_the_demo_page_is_served_with_a_strict_policy_and_can_be_turned_off(trained_run):
    import httpx

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
