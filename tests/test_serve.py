"""`sentitune serve`: a real uvicorn server on 127.0.0.1 in front of the session's tiny trained run,
driven over real HTTP; the Vertex AI variables and start-up failures through the command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from helpers import STARTUP_TIMEOUT_S, cli_error, free_port, sentitune_serve, serving

from sentitune import LABELS
from sentitune.batching import TokenizedTexts
from sentitune.cli import build_parser
from sentitune.config import ServeSettings
from sentitune.errors import SentituneError
from sentitune.logs import JsonFormatter
from sentitune.packed import PackedClassifier
from sentitune.scoring import Predictor

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'sentitune[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'sentitune[serve]'")
httpx = pytest.importorskip("httpx", reason="needs httpx (the dev extra)")

serve = pytest.importorskip("sentitune.serve")  # present now that its extras are: the module under test

SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor(str(trained_run), precision="fp32")


@pytest.fixture(scope="module")
def server(predictor):
    # A longer wait than the default makes batching certain in the concurrency test on a slow machine.
    with serving(
        serve.create_app(predictor, ServeSettings(host="127.0.0.1", port=0, max_wait_ms=20))
    ) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def posts(corpus) -> list[str]:
    return corpus["text"].tolist()[:64]


def assert_matches(predictions: list[dict], expected) -> None:
    assert len(predictions) == len(expected)
    for got, want in zip(predictions, expected, strict=True):
        assert got["label"] == want.label
        assert list(got["scores"]) == list(LABELS)
        assert got["scores"] == pytest.approx(want.scores, abs=SCORE_TOLERANCE)


def predict_records(caplog) -> list[dict]:
    return [
        r.json_fields
        for r in caplog.records
        if r.name == "sentitune.serve" and getattr(r, "json_fields", {}).get("method") == "POST"
    ]


# ----------------------------------------------------------------------------- the contract


def test_health_says_ok_once_loaded(client, trained_run):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": str(trained_run), "labels": list(LABELS)}


def test_predictions_equal_the_predictor(client, predictor, posts):
    texts = posts[:6]
    # strings, objects (extra fields ignored) and one-column CSV rows, as a batch prediction job sends them
    instances = [[t] if i % 3 == 2 else t if i % 3 else {"text": t, "id": i} for i, t in enumerate(texts)]
    r = client.post("/predict", json={"instances": instances, "parameters": {"anything": 1}})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["predictions"]
    assert_matches(r.json()["predictions"], predictor.predict(texts))


def test_concurrent_requests_share_model_calls(server, predictor, posts, caplog):
    caplog.set_level(logging.INFO, logger="sentitune.serve")
    expected = predictor.predict(posts)
    workers = 32
    start = threading.Barrier(workers)

    def ask(i: int) -> httpx.Response:
        start.wait()
        return httpx.post(f"{server.url}/predict", json={"instances": posts[2 * i : 2 * i + 2]}, timeout=60)

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(ask, range(workers)))
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        assert_matches(r.json()["predictions"], expected[2 * i : 2 * i + 2])
    shared = [rec["batch_requests"] for rec in predict_records(caplog) if rec["status"] == 200]
    assert len(shared) == workers
    assert max(shared) > 1, f"every request ran alone: {shared}"
    assert server.app.state.batcher.largest_batch_requests > 1


def test_each_request_logs_one_json_line(client, caplog):
    caplog.set_level(logging.INFO, logger="sentitune.serve")
    assert client.post("/predict", json={"instances": ["first post", "second post"]}).status_code == 200
    assert client.post("/predict", json={"instances": [""]}).status_code == 422
    ok, bad = predict_records(caplog)
    assert {k: ok[k] for k in ("route", "status", "instances", "batch_requests")} == {
        "route": "/predict",
        "status": 200,
        "instances": 2,
        "batch_requests": 1,
    }
    assert ok["latency_ms"] > 0
    assert bad["status"] == 422 and "empty" in bad["error"]
    line = JsonFormatter().format(next(r for r in caplog.records if getattr(r, "json_fields", None) == ok))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["severity"] == "INFO" and entry["message"] == "POST /predict 200"
    assert {k: entry[k] for k in ok} == ok


BAD_REQUESTS = {
    "malformed JSON": (dict(content=b'{"instances": ["a", ', headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "missing instances": (dict(json={"parameters": {}}), 422, "no 'instances' field"),
    "instances not a list": (dict(json={"instances": "one post"}), 422, "'instances' must be a list"),
    "number instance": (dict(json={"instances": ["fine", 5]}), 422, "instances[1] must be a string, an object"),
    "object without text": (dict(json={"instances": [{"txt": "x"}]}), 422, 'instances[0] must be a string, an object {"text": "..."} or a one-column row ["..."], got {"txt": "x"}'),
    "empty string": (dict(json={"instances": ["fine", ""]}), 422, "instances[1] is empty"),
    "two-column CSV row": (dict(json={"instances": ["fine", ["a", "b"]]}), 422, 'instances[1] must be a string, an object {"text": "..."} or a one-column row ["..."], got ["a", "b"]'),
    "no instances": (dict(json={"instances": []}), 422, "'instances' is empty"),
    "1 MB text": (dict(json={"instances": ["a" * 1_000_000]}), 413, "instances[0] is 1000000 characters long; the limit is 10000"),
    "10,000 instances": (dict(json={"instances": ["a"] * 10_000}), 413, "10000 instances in one request; the limit is 1000"),
    "2 MB body": (dict(json={"instances": ["ab " * 700_000]}), 413, "the request body is over 1500000 bytes"),
    "text/plain": (dict(content=b'{"instances": ["x"]}', headers={"content-type": "text/plain"}), 415, "Content-Type 'text/plain'"),
    "form encoded": (dict(data={"instances": "x"}), 415, "Content-Type: application/json"),
    "parameters not an object": (dict(json={"instances": ["x"], "parameters": [1]}), 422, "'parameters' must be a JSON object"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_a_json_error_and_the_server_keeps_serving(client, case):
    kwargs, status, message = BAD_REQUESTS[case]
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json={"instances": ["still here"]}).status_code == 200


def test_unknown_route_and_method_are_json_errors(client):
    r = client.get("/nowhere")
    assert (r.status_code, r.json()) == (404, {"error": "Not Found"})
    r = client.get("/predict")
    assert (r.status_code, r.json()) == (405, {"error": "Method Not Allowed"})


def test_openapi_describes_request_and_response(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["PredictRequest"]["required"]) == {"instances"}
    assert set(schemas["PredictRequest"]["properties"]) == {"instances", "parameters"}
    assert schemas["TextInstance"]["required"] == ["text"]
    operation = spec["paths"]["/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/PredictRequest")
    responses = operation["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    for status in ("400", "413", "415", "422"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]


# ----------------------------------------------------------------------------- batching by a token budget


def token_rows(*lengths: int) -> TokenizedTexts:
    """Tokenised posts of these lengths whose ids name them: post i holds the id 1000 * (i + 1) + length."""
    parts = [np.full(n, 1000 * (i + 1) + n, np.int32) for i, n in enumerate(lengths)]
    return TokenizedTexts.concat([TokenizedTexts(part, np.array([0, len(part)]), 0) for part in parts])


def run_batcher(score, requests: list[TokenizedTexts], **settings) -> list:
    """Every request sent to a TokenBatcher at once, as concurrent handlers would: the answers (or the
    exceptions), in the requests' order."""

    async def main():
        batcher = serve.TokenBatcher(score, **settings)
        batcher.start()
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(batcher.predict(r) for r in requests), return_exceptions=True), 60
            )
        finally:
            batcher.stop()

    return asyncio.run(main())


def test_passes_stay_within_the_token_budget_and_answers_stay_in_order():
    passes: list[tuple[int, int]] = []  # (posts, longest) of every forward pass
    model_started = threading.Event()

    def score(tokens: TokenizedTexts) -> np.ndarray:
        model_started.wait(10)  # the first pass waits until every request is queued: they share batches
        passes.append((len(tokens), int(tokens.lengths.max())))
        first = tokens.ids[tokens.offsets[:-1]]
        return np.stack([first, tokens.lengths], axis=1).astype(np.float64)

    rng = np.random.default_rng(0)
    requests = [token_rows(*rng.integers(1, 40, size=rng.integers(1, 9))) for _ in range(40)]
    requests.append(token_rows(300))  # longer than the whole budget
    threading.Timer(0.5, model_started.set).start()
    answers = run_batcher(score, requests, max_batch=1000, max_batch_tokens=100, model_batch=8)

    for tokens, (probs, _) in zip(requests, answers, strict=True):
        assert probs[:, 0].tolist() == tokens.ids[tokens.offsets[:-1]].tolist()
        assert probs[:, 1].tolist() == tokens.lengths.tolist()
    assert sum(n for n, _ in passes) == sum(len(r) for r in requests)
    assert all(n <= 8 for n, _ in passes)
    assert all(n * longest <= 100 for n, longest in passes if n > 1)
    assert (1, 300) in passes  # the long post ran alone
    assert max(shared for _, shared in answers) > 1


def test_a_request_larger_than_a_batch_is_taken_alone():
    batches: list[int] = []

    def score(tokens: TokenizedTexts) -> np.ndarray:
        batches.append(len(tokens))
        return tokens.lengths[:, None].astype(np.float64)

    requests = [token_rows(*[5] * 20)] + [token_rows(3, 4) for _ in range(5)]
    answers = run_batcher(score, requests, max_batch=8, max_batch_tokens=10_000, model_batch=64)
    assert [a[0][:, 0].tolist() for a in answers] == [r.lengths.tolist() for r in requests]
    assert 20 in batches and max(n for n in batches if n != 20) <= 8


def test_a_pass_that_fails_fails_only_the_request_that_caused_it():
    """Inside a merged batch, a post the model cannot take is retried alone: the others get answers."""

    def score(tokens: TokenizedTexts) -> np.ndarray:
        if (tokens.lengths == 13).any():
            raise ValueError("the model cannot take this post")
        return tokens.lengths[:, None].astype(np.float64)

    requests = [token_rows(i, i + 20) for i in range(1, 11)] + [token_rows(13)]
    answers = run_batcher(score, requests, max_batch=64, max_batch_tokens=64, model_batch=4)
    assert [a[0][:, 0].tolist() for a in answers[:10]] == [[i, i + 20] for i in range(1, 11)]
    assert isinstance(answers[10], ValueError)


class RecordingPredictor:
    """The real Predictor, its forward passes recorded as (posts, longest post in tokens, tokens)."""

    def __init__(self, predictor: Predictor):
        self.inner, self.passes = predictor, []

    def probabilities_of(self, tokens: TokenizedTexts) -> np.ndarray:
        self.passes.append((len(tokens), int(tokens.lengths.max()), tokens.tokens))
        return self.inner.probabilities_of(tokens)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_mixed_lengths_from_many_threads_get_the_offline_scores_in_order(predictor, corpus):
    """A real server with a small token budget: 48 threads send 1 to 8 posts each, short and long mixed
    with one post longer than the whole budget; each answer is the offline Predictor's for its posts."""
    texts = corpus["text"].tolist()
    longest = max(texts, key=len)
    recording = RecordingPredictor(predictor)
    settings = ServeSettings(host="127.0.0.1", port=0, max_batch_tokens=96, model_batch=8)
    rng = np.random.default_rng(1)
    requests = [list(rng.choice(texts, size=int(rng.integers(1, 9)), replace=False)) for _ in range(47)]
    requests.append([longest * 3])
    expected = [predictor.predict(r) for r in requests]
    start = threading.Barrier(len(requests))

    with serving(serve.create_app(recording, settings)) as running:

        def ask(texts: list[str]) -> httpx.Response:
            start.wait()
            return httpx.post(f"{running.url}/predict", json={"instances": texts}, timeout=120)

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(ask, requests))
    for r, want in zip(answers, expected, strict=True):
        assert r.status_code == 200, r.text
        assert_matches(r.json()["predictions"], want)
    assert sum(n for n, _, _ in recording.passes) == sum(len(r) for r in requests)
    # the model runs packed (a BERT on a CPU): the budget counts the posts' own tokens, not padding
    assert isinstance(predictor.scorer, PackedClassifier)
    assert all(n <= 8 and (n == 1 or tokens <= 96) for n, _, tokens in recording.passes)
    assert any(n == 1 and longest_tokens > 96 for n, longest_tokens, _ in recording.passes)


def test_plain_requests_and_objects_get_the_same_bytes(client, posts):
    """Plain strings are answered before FastAPI's route; the same posts as objects go through the route."""
    plain = client.post("/predict", json={"instances": posts[:5], "parameters": {"explain": False}})
    objects = client.post("/predict", json={"instances": [{"text": t} for t in posts[:5]]})
    assert plain.status_code == objects.status_code == 200
    assert plain.content == objects.content
    assert plain.headers["content-type"] == objects.headers["content-type"] == "application/json"


def test_a_poisoned_request_fails_alone_among_30_concurrent_good_ones(server, predictor, posts):
    """A lone surrogate passes JSON and the string check; it must get its own 422 and never a 500 for
    the requests that share its batch."""
    expected = predictor.predict(posts[:30])
    workers = 31
    start = threading.Barrier(workers)

    def ask(i: int) -> httpx.Response:
        start.wait()
        body = '{"instances": ["caf\\ud800"]}' if i == 30 else json.dumps({"instances": [posts[i]]})
        return httpx.post(
            f"{server.url}/predict", content=body, headers={"Content-Type": "application/json"}, timeout=60
        )

    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(ask, range(workers)))
    assert [r.status_code for r in answers[:30]] == [200] * 30
    for r, want in zip(answers[:30], expected, strict=True):
        assert_matches(r.json()["predictions"], [want])
    assert answers[30].status_code == 422
    assert answers[30].json() == {
        "error": "instances[0] is not valid Unicode text (a lone surrogate such as \\ud800); send UTF-8 text"
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_in_flight_requests_are_answered_when_the_server_stops(predictor, posts, workers):
    """The server is told to stop while each model thread runs one request and the rest of 16 wait in its
    queue: all 16 get their answers, then the model threads end."""
    release = threading.Event()

    class Held(RecordingPredictor):
        def probabilities_of(self, tokens):
            release.wait(30)
            return super().probabilities_of(tokens)

    settings = ServeSettings(host="127.0.0.1", port=0, max_batch=4, model_workers=workers)
    app = serve.create_app(Held(predictor), settings)
    batcher = app.state.batcher
    with ThreadPoolExecutor(16) as pool:
        with serving(app) as running:
            asked = [
                pool.submit(
                    httpx.post, f"{running.url}/predict", json={"instances": posts[i : i + 4]}, timeout=60
                )
                for i in range(16)
            ]
            deadline = time.monotonic() + 30
            while batcher.batches < workers or len(batcher._queue) < 16 - workers:
                assert time.monotonic() < deadline, "the requests did not all arrive"
                time.sleep(0.01)
            threading.Timer(0.5, release.set).start()
        answers = [a.result() for a in asked]
    assert [r.status_code for r in answers] == [200] * 16
    for i, r in enumerate(answers):
        assert_matches(r.json()["predictions"], predictor.predict(posts[i : i + 4]))
    assert batcher.batches == 16 and not any(t.is_alive() for t in batcher._threads)


STRICT_PROTOCOLS: dict[int, str] = {}  # port -> the HTTP stack strict_server runs there


def strict_server_protocol(port: int) -> str:
    return STRICT_PROTOCOLS[port]


@pytest.fixture(scope="module", params=["httptools", "h11"])
def strict_server(predictor, request):
    """A server with short header and body deadlines, for slow and lying clients: on httptools (what the
    serve extra installs) and on h11 (what serves without it)."""
    settings = ServeSettings(host="127.0.0.1", port=0, header_timeout_s=0.5, body_timeout_s=0.5)
    app = serve.create_app(predictor, settings)
    sock = serve.open_socket("127.0.0.1", 0)
    protocol = serve.http_protocol(settings.header_timeout_s, httptools=request.param == "httptools")
    assert protocol.__name__ == {"httptools": "GuardedHttpTools", "h11": "GuardedH11"}[request.param]
    server = serve.uvicorn_server(app, protocol)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    STRICT_PROTOCOLS[sock.getsockname()[1]] = request.param
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(15)
    sock.close()


def raw_exchange(port: int, data: bytes, wait_s: float = 3.0) -> tuple[bytes, float]:
    """Send raw bytes, then read until the server closes; (answer, seconds until closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        started = time.monotonic()
        conn.sendall(data)
        answer = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return answer, time.monotonic() - started
            answer += chunk
            if time.monotonic() - started > wait_s + 5:
                raise AssertionError(f"the server kept the connection open: {answer!r}")


def json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("sent", [b"POST /predict HTTP/1.1\r\nHost: x\r\n", b""], ids=["part", "nothing"])
def test_a_client_that_withholds_its_headers_is_cut_off(strict_server, sent):
    answer, seconds = raw_exchange(strict_server, sent)
    assert answer.startswith(b"HTTP/1.1 408 ") and 0.4 < seconds < 3
    assert json_body(answer) == {"error": "the request line and headers did not arrive within 0.5 s"}


def test_the_header_deadline_holds_for_the_next_request_on_a_kept_alive_connection(strict_server):
    body = b'{"instances": ["a fine day"]}'
    first = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    first += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    answer, seconds = raw_exchange(strict_server, first + b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and 0.4 < seconds < 3
    second = answer[answer.index(b"HTTP/1.1 408 ") :]
    assert json_body(second) == {"error": "the request line and headers did not arrive within 0.5 s"}


def test_a_request_head_past_16_kib_is_refused_and_the_connection_closed(strict_server):
    """llhttp bounds nothing by itself; the server refuses a head past what h11 allows (16 KiB)."""
    body = b'{"instances": ["a fine day"]}'
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n" % len(body)
    answer, _ = raw_exchange(strict_server, head + b"X-Big: " + b"a" * 8_000 + b"\r\n\r\n" + body, 0.5)
    assert answer.startswith(b"HTTP/1.1 200 ")  # 8 KB of headers (a large cookie) is fine
    try:
        answer, seconds = raw_exchange(strict_server, head + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n" + body)
    except ConnectionResetError:  # closed before the client had sent it all: refused all the same
        answer, seconds = b"", 0.0
    assert seconds < 3
    if strict_server_protocol(strict_server) == "httptools":
        assert answer.startswith(b"HTTP/1.1 431 ") and b"connection: close" in answer.lower()
        assert json_body(answer) == {
            "error": "the request line and headers exceed 16 KiB; send fewer or shorter headers"
        }
    else:  # h11's own bound: a 400, or a reset when it closes before reading the rest
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")


def test_a_body_shorter_than_its_content_length_gets_a_408(strict_server):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    answer, seconds = raw_exchange(strict_server, head + b'{"instances"')
    assert answer.startswith(b"HTTP/1.1 408 ") and seconds < 3
    assert json_body(answer) == {
        "error": "the request body did not arrive within 0.5 s (--body-timeout-s); send the whole body, with a "
        "Content-Length that matches it"
    }


def test_malformed_http_gets_a_json_400(strict_server):
    answer, _ = raw_exchange(strict_server, b"HELLO THERE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in answer.lower()
    assert json_body(answer) == {
        "error": "the request is not valid HTTP/1.1; send a JSON POST to the predict route"
    }


@pytest.mark.parametrize("packing", ["0", "1"])
def test_the_pytorch_model_sees_few_shapes_whatever_the_batches(trained_run, corpus, monkeypatch, packing):
    """Every shape costs the kernels memory that stays: a server's shapes are bounded. Padded: rows in fours
    up to 16, tokens in eights. Packed: the dense layers' tokens in steps of 64, attention's rows in fours
    and longest post in eights."""
    monkeypatch.setenv("SENTITUNE_PACK", packing)
    predictor = Predictor(str(trained_run), precision="fp32", batch_size=16)
    shapes = set()

    def record(module, args, kwargs):
        shapes.add((len(args[0]), *args[4].shape[::3]) if args else tuple(kwargs["input_ids"].shape))

    hook = predictor.scorer.register_forward_pre_hook(record, with_kwargs=True)
    texts = corpus["text"].tolist()
    rng = np.random.default_rng(0)
    try:
        for _ in range(150):
            predictor.probabilities(list(rng.choice(texts, size=int(rng.integers(1, 65)), replace=False)))
    finally:
        hook.remove()
    attention = {shape[-2:] for shape in shapes}  # (rows, tokens): all a padded pass has
    assert len(attention) <= 4 * 13, sorted(attention)  # rows in fours up to 16, tokens in eights up to 104
    assert all(rows % 4 == 0 and width % 8 == 0 for rows, width in attention), sorted(attention)
    if packing == "1":
        dense = {shape[0] for shape in shapes}
        assert all(tokens % 64 == 0 for tokens in dense) and len(dense) <= 16 * 104 // 64, sorted(dense)


# ----------------------------------------------------------------------------- settings and the command line


def test_the_token_budget_follows_whether_the_model_runs_packed(predictor, trained_run, monkeypatch):
    """--max-batch-tokens 0 (the default): 512 of the posts' own tokens packed, 1024 counting padding
    otherwise; a budget given is kept either way."""
    assert isinstance(predictor.scorer, PackedClassifier)
    app = serve.create_app(predictor, ServeSettings(host="127.0.0.1", port=0))
    assert (app.state.batcher.max_batch_tokens, app.state.batcher.padded) == (512, False)
    monkeypatch.setenv("SENTITUNE_PACK", "0")
    padded = Predictor(str(trained_run), precision="fp32")
    app = serve.create_app(padded, ServeSettings(host="127.0.0.1", port=0))
    assert (app.state.batcher.max_batch_tokens, app.state.batcher.padded) == (1024, True)
    app = serve.create_app(padded, ServeSettings(host="127.0.0.1", port=0, max_batch_tokens=300))
    assert app.state.batcher.max_batch_tokens == 300


def test_auto_backend_follows_the_cpu_kind_and_what_the_run_has(run_copy, monkeypatch):
    """PyTorch where the CPU computes bf16 natively; the int8 export on one without, once the run has it."""
    run = str(run_copy)
    assert serve.choose_backend("onnx", run) == ("onnx", "--backend onnx")
    monkeypatch.setattr(serve, "cpu_has_native_bf16", lambda: True)
    assert serve.choose_backend("auto", run, "cpu")[0] == "torch"
    monkeypatch.setattr(serve, "cpu_has_native_bf16", lambda: False)
    backend, why = serve.choose_backend("auto", run, "cpu")
    assert backend == "torch" and "sentitune export RUN_DIR --quantize int8" in why
    (run_copy / "onnx").mkdir()
    (run_copy / "onnx" / "model_int8.onnx").write_bytes(b"")
    assert serve.choose_backend("auto", run, "cpu")[0] == "onnx-int8"


def test_settings_read_the_vertex_variables_and_options_win():
    env = {"AIP_HTTP_PORT": "9001", "AIP_HEALTH_ROUTE": "/h", "AIP_PREDICT_ROUTE": "/v1/m:predict"}
    s = ServeSettings.from_env(env)
    assert (s.port, s.health_route, s.predict_route) == (9001, "/h", "/v1/m:predict")
    assert ServeSettings.from_env(env, port=7000).port == 7000
    assert ServeSettings.from_env({}).port == 8080
    with pytest.raises(SentituneError, match="AIP_HTTP_PORT must be a port number, got 'http'"):
        ServeSettings.from_env({"AIP_HTTP_PORT": "http"})
    with pytest.raises(
        SentituneError,
        match=r"--max-batch must be in \[1, 65536\], got 0; --max-wait-ms must be in \[0, 10000\]",
    ):
        ServeSettings(max_batch=0, max_wait_ms=-1)


def test_command_line_options_are_the_settings_fields():
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for f in fields(ServeSettings):
        flag = "--" + f.name.replace("_", "-")
        assert (flag in help_text) == (f.name not in ("health_route", "predict_route")), flag
    args = build_parser().parse_args(["serve", "run", "--max-batch", "7"])
    assert args.max_batch == 7 and not hasattr(args, "port")  # unset: $AIP_HTTP_PORT, else the default


def test_no_model_given_is_an_error(capsys, monkeypatch):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    assert "pass RUN_DIR" in cli_error(capsys, "serve", "--port", "0", "--host", "127.0.0.1")


def test_missing_extra_names_the_install_command(capsys, monkeypatch, trained_run):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "sentitune.serve")
    message = cli_error(capsys, "serve", trained_run)
    assert message == (
        "sentitune serve needs the Python package 'fastapi', which is not installed; "
        "run: pip install 'sentitune[serve]'"
    )


def test_listening_socket_is_tcp_and_a_taken_port_is_an_error():
    with serve.open_socket("127.0.0.1", 0) as sock:
        # asyncio turns Nagle off (TCP_NODELAY) only on sockets created as TCP; with it on, every
        # keep-alive request waited ~40 ms for a delayed ACK.
        assert sock.proto == socket.IPPROTO_TCP
        port = sock.getsockname()[1]
        with pytest.raises(SentituneError, match=f"cannot listen on 127.0.0.1:{port}: .*pass another --port"):
            serve.open_socket("127.0.0.1", port)


def test_vertex_variables_in_a_real_process(tmp_path, trained_run, predictor):
    """RUN_DIR from AIP_STORAGE_URI, port and routes from the AIP_* variables, JSON logs on stderr."""
    port = free_port()
    health, predict = "/v1/endpoints/7/deployedModels/9", "/v1/endpoints/7/deployedModels/9:predict"
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": health,
        "AIP_PREDICT_ROUTE": predict,
        "AIP_STORAGE_URI": str(trained_run),
    }
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as log_file:
        proc = sentitune_serve(
            "--host", "127.0.0.1", "--num-threads", "1", "--precision", "fp32", env=env, stderr=log_file
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the server did not answer its health route"
                try:
                    if httpx.get(url + health, timeout=STARTUP_TIMEOUT_S).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            texts = ["@united thanks for the quick rebooking, great crew!", "worst delay ever"]
            r = httpx.post(url + predict, json={"instances": [texts[0], {"text": texts[1]}]}, timeout=30)
            assert r.status_code == 200, r.text
            assert_matches(r.json()["predictions"], predictor.predict(texts))
            assert httpx.get(url + "/health", timeout=10).status_code == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    served = [e for e in lines if e.get("route") == predict]
    assert [(e["status"], e["instances"]) for e in served] == [(200, 2)]
    assert any(e["message"].startswith(f"serving {trained_run}") for e in lines)
    stopped = [e for e in lines if e["message"] == f"stopped serving {trained_run}"]
    assert [e["model_calls"] for e in stopped] == [1], "no clean shutdown"


def test_a_model_that_fails_to_load_stops_the_server_at_start(tmp_path, trained_run):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(trained_run).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    missing = tmp_path / "missing"
    procs = {
        missing: sentitune_serve(missing, "--host", "127.0.0.1", "--port", free_port()),
        broken: sentitune_serve(broken, "--host", "127.0.0.1", "--port", free_port()),
    }
    errors = {}
    for folder, proc in procs.items():
        try:
            _, errors[folder] = proc.communicate(timeout=STARTUP_TIMEOUT_S)
        finally:
            proc.kill()
        assert proc.returncode == 2, errors[folder]
        assert "Traceback" not in errors[folder]
        assert errors[folder].strip().splitlines()[-1].startswith(f"error: cannot serve {folder}: ")
    assert "run folder not found" in errors[missing]


def test_model_threads_split_the_cpu_threads_for_pytorch_on_a_cpu(predictor, monkeypatch):
    """Auto: two model threads of half the torch threads each, for PyTorch on a CPU with two or more;
    one otherwise (an ONNX session, a single thread). Asked for, as many as asked."""
    import types

    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert serve.model_workers(predictor, 0) == (2, 2)
    assert serve.model_workers(predictor, 3) == (3, 1)
    assert serve.model_workers(predictor, 1) == (1, None)
    onnx = types.SimpleNamespace(backend="onnx-int8", device=torch.device("cpu"))
    assert serve.model_workers(onnx, 0) == (1, None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert serve.model_workers(predictor, 0) == (1, None)


def test_what_runs_alone_gets_every_model_threads_torch_threads(predictor):
    """An explanation runs while both model threads wait, on the torch threads they have between them
    (not the one thread a model thread's own count left as torch's default), which is the default again
    after it."""
    import torch

    before = torch.get_num_threads()
    batcher = serve.TokenBatcher(
        predictor.probabilities_of,
        max_batch=8,
        max_batch_tokens=256,
        model_batch=8,
        workers=2,
        threads_per_worker=1,
    )
    batcher.start()
    try:
        time.sleep(0.2)  # the model threads have set their own counts
        seen = asyncio.run(batcher.run_alone(torch.get_num_threads))
        after = asyncio.run(batcher.run_alone(lambda: None))
    finally:
        batcher.stop()
    assert seen == 2 and after is None
    assert asyncio.run(asyncio.to_thread(torch.get_num_threads)) == 1  # the share, as the threads left it
    torch.set_num_threads(before)
