"""`sentitune serve`: an HTTP prediction server that follows the Vertex AI custom-container contract.

Vertex AI starts the container with AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and
AIP_STORAGE_URI (where it copied the model); locally they default to 8080, /health, /predict and the
RUN_DIR argument. A prediction request is `{"instances": [...], "parameters": {...}}`, an instance being
a string or `{"text": ...}`; the answer is `{"predictions": [{"label": ..., "scores": {...}}, ...]}`.

Requests are tokenised as they arrive and queued; the model's own thread takes everything queued as soon
as it is free, sorted by length and cut into forward passes by a budget of tokens (`TokenBatcher`), so
throughput grows with concurrency up to the model's own speed. Every answer that is not a prediction is a JSON
`{"error": "..."}` with a 4xx status (5xx only for our own bugs), and every request leaves one JSON log
line on stderr.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import html
import importlib.resources
import importlib.util
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch

from sentitune import __version__
from sentitune.batching import TokenizedTexts, passes_within_budget
from sentitune.config import ServeConfig, ServeSettings
from sentitune.errors import SentituneError, require_extra
from sentitune.explain import explain
from sentitune.logs import use_json_logs
from sentitune.packed import PackedClassifier
from sentitune.runfolder import onnx_path
from sentitune.runtime import cpu_has_native_bf16, resolve_device
from sentitune.scoring import Predictor
from sentitune.storage import exists

require_extra("fastapi", "serve", "sentitune serve")
require_extra("uvicorn", "serve", "sentitune serve")

import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: E402
from pydantic import BaseModel, Field, StrictStr  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

MAX_EXPLAIN = 64  # most instances one request may ask to explain: each scores a copy per word
MAX_UI_POSTS = 1000  # most posts the demo page sends at once; it says so when it cuts
# Requests of more posts are tokenised on a worker thread, so one large request does not hold up the event
# loop (and every other request's reading and answering) for milliseconds; smaller ones tokenise at once.
TOKENIZE_INLINE_POSTS = 16

log = logging.getLogger("sentitune.serve")


def serve(cfg: ServeConfig) -> None:
    """Load the run in `cfg.run_dir`, then serve it until interrupted. Build `cfg` with
    `ServeConfig.from_env(...)` so the Vertex AI variables fill what is not given. Every problem with the
    settings or the model is raised here, before the server answers anything."""
    use_json_logs()
    # The port is taken before the (slow) model load: a port in use fails at once, and Vertex AI's TCP
    # liveness probe connects while the model loads; requests wait in the backlog until it is ready.
    sock = open_socket(cfg.host, cfg.port)
    try:
        backend, backend_reason = choose_backend(cfg.backend, cfg.run_dir, cfg.device)
        predictor = load_predictor(
            cfg.run_dir,
            device=cfg.device,
            precision=cfg.precision,
            num_threads=cfg.num_threads,
            backend=backend,
            batch_size=cfg.model_batch,
        )
        settings = cfg.settings
        app = create_app(predictor, settings)
        host_shown, port_shown = sock.getsockname()[:2]
        log.info(
            f"serving {cfg.run_dir} on http://{host_shown}:{port_shown}",
            extra={
                "json_fields": {
                    "model": cfg.run_dir,
                    "labels": list(predictor.labels),
                    "health_route": settings.health_route,
                    "predict_route": settings.predict_route,
                    "device": str(predictor.device),
                    "precision": str(predictor.precision),
                    "backend": predictor.backend,
                    "backend_reason": backend_reason,
                    "forward": getattr(predictor, "scorer_reason", None),
                    "model_workers": app.state.batcher.workers,
                    "max_batch_tokens": app.state.batcher.max_batch_tokens,
                    "budget_counts": "padding" if app.state.batcher.padded else "the posts' own tokens",
                    "threads_per_worker": app.state.batcher.threads_per_worker or torch.get_num_threads(),
                }
            },
        )
        uvicorn_server(app).run(sockets=[sock])
    finally:
        sock.close()


def choose_backend(requested: str, run_dir: str, device: str = "auto") -> tuple[str, str]:
    """The backend to serve with, and why. `auto` takes the faster one measured on this kind of machine
    (docs/benchmarks/serving.md): on a CPU without native bf16 (AVX2), where PyTorch runs fp32, the run's
    int8 export served 1.5x PyTorch's posts/s; with AVX512-BF16 or AMX PyTorch in bf16 is faster than int8,
    and on a GPU PyTorch is the only choice."""
    if requested != "auto":
        return requested, f"--backend {requested}"
    if resolve_device(device).type != "cpu":
        return "torch", "auto: PyTorch on a GPU"
    if cpu_has_native_bf16():
        return "torch", "auto: this CPU computes bf16 natively, where PyTorch in bf16 outruns the int8 export"
    if not exists(onnx_path(run_dir, "onnx-int8")):
        return "torch", (
            "auto: PyTorch, as the run has no int8 export (`sentitune export RUN_DIR --quantize int8` makes "
            "one, faster on this CPU)"
        )
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch", "auto: PyTorch, as onnxruntime is not installed (pip install 'sentitune[export]')"
    return "onnx-int8", "auto: this CPU has no native bf16, where the int8 export outruns PyTorch in fp32"


def load_predictor(
    run_dir: str,
    device: str = "auto",
    precision: str = "auto",
    num_threads: int | None = None,
    backend: str = "torch",
    batch_size: int = ServeSettings.model_batch,
):
    """The run's Predictor, warmed up by one prediction; any failure is a SentituneError naming the folder."""
    if num_threads:
        torch.set_num_threads(num_threads)
    started = time.perf_counter()
    try:
        predictor = Predictor(
            run_dir, device=device, precision=precision, backend=backend, batch_size=batch_size
        )
        predictor.probabilities(["warm-up"])  # first call allocates; a broken model fails here, not later
    except SentituneError as exc:
        raise SentituneError(f"cannot serve {run_dir}: {exc}") from exc
    except Exception as exc:
        raise SentituneError(
            f"cannot serve {run_dir}: the model failed to load ({type(exc).__name__}: {exc}); "
            "pass the --job-dir of a finished `sentitune train` run"
        ) from exc
    log.info(
        f"loaded {run_dir} in {time.perf_counter() - started:.1f} s",
        extra={"json_fields": {"model": run_dir, "load_s": round(time.perf_counter() - started, 3)}},
    )
    return predictor


def open_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one), or an error that says how to pick another port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Protocol IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle's algorithm and delayed ACKs add ~40 ms to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SentituneError(
            f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}; "
            "pass another --port or --host"
        ) from exc
    return sock


def uvicorn_server(app: FastAPI, protocol: type | None = None) -> uvicorn.Server:
    """A uvicorn server for `app` whose logs go through the root logger (JSON under `serve`), on
    uvicorn's HTTP/1.1 protocol with the app's header deadline (`http_protocol`) and its fastest event loop
    (uvloop when installed)."""
    settings: ServeSettings = app.state.settings
    protocol = protocol or http_protocol(settings.header_timeout_s)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        http=protocol,
        timeout_keep_alive=5,
    )
    return uvicorn.Server(config)


HEAD_LIMIT_BYTES = 16 * 1024  # a request's line and headers, as h11 bounds them


class HeaderDeadline:
    """A deadline for each request's line and headers (a client that opens a connection and trickles or
    withholds them is cut off, so slow clients cannot pile up), and a JSON 400 for malformed HTTP like
    every other error: mixed into uvicorn's HTTP/1.1 protocols."""

    header_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        message = f"the request line and headers did not arrive within {self.header_timeout_s:g} s"
        log.warning(message, extra={"json_fields": {"status": 408, "error": message}})
        self._write_json_and_close(408, "Request Timeout", {"error": message})

    def send_400_response(self, msg: str) -> None:
        self._write_json_and_close(
            400,
            "Bad Request",
            {"error": "the request is not valid HTTP/1.1; send a JSON POST to the predict route"},
        )

    def _write_json_and_close(self, status: int, reason: str, body: dict) -> None:
        payload = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + payload)
        self.transport.close()


class GuardedH11(HeaderDeadline, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol (h11), with the header deadline: what serves when httptools
    is not installed."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # the next request's head starts arriving
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # its head is complete: the body has its own deadline (RequestGuard)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        pending = self.conn.trailing_data[0] if self.conn is not None else b""
        if pending and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # a pipelined request's head arrived in part with the one just answered

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def http_protocol(header_timeout_s: float, httptools: bool = True) -> type:
    """The HTTP/1.1 protocol class to serve with: uvicorn's on httptools (C, llhttp) when it is installed
    (the serve extra installs it; it costs the server less CPU per request than h11, CPU the model
    shares), else on h11; either with the header deadline."""
    base = (guarded_httptools() if httptools else None) or GuardedH11
    return type(base.__name__, (base,), {"header_timeout_s": header_timeout_s})


@functools.cache
def guarded_httptools() -> type | None:
    """uvicorn's httptools protocol with the header deadline and a bound on the head (None: no httptools)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class GuardedHttpTools(HeaderDeadline, HttpToolsProtocol):
        _head_bytes = 0
        _head_too_large = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm()  # a request's first bytes: its line and headers are due within the deadline

        # llhttp sets no bound on a request's line and headers (h11 stops at 16 KiB): this one does.
        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > HEAD_LIMIT_BYTES:
                self._head_too_large = True
                raise ValueError("request head too large")  # stops the parser: send_400_response answers

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            if not self._head_too_large:
                return super().send_400_response(msg)
            self._write_json_and_close(
                431,
                "Request Header Fields Too Large",
                {
                    "error": f"the request line and headers exceed {HEAD_LIMIT_BYTES // 1024} KiB; send fewer or shorter headers"
                },
            )

        def on_headers_complete(self) -> None:
            self._disarm()  # the body has its own deadline (RequestGuard)
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpTools


# ----------------------------------------------------------------------------- request and response


class TextInstance(BaseModel):
    """An instance given as an object; fields other than `text` are ignored."""

    text: str = Field(description="the post to classify")


# A CSV row of a Vertex AI batch prediction job, which sends each row as a list of its values: the post in
# its only column.
CsvRow = Annotated[list[StrictStr], Field(min_length=1, max_length=1)]


class PredictRequest(BaseModel):
    """The Vertex AI prediction request."""

    instances: list[StrictStr | TextInstance | CsvRow] = Field(
        description="posts to classify: strings, objects with a `text` field, or one-column CSV rows (lists)",
        examples=[["what a great day", {"text": "worst service ever"}]],
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description=f'`{{"explain": true}}` adds each post\'s words and their attributions to its prediction '
        f"(at most {MAX_EXPLAIN} instances); other parameters are ignored",
    )


class LabelScores(BaseModel):
    label: str = Field(description="the most probable class")
    scores: dict[str, float] = Field(description="probability of every class; they sum to 1")
    explanation: dict[str, Any] | None = Field(
        default=None,
        description='with `"explain": true`: the words of the post, their spans in code points (Python '
        "string indices, not UTF-16 units) and their attributions to the label: by occlusion, the label's "
        "probability minus its probability with the word removed",
    )


class PredictResponse(BaseModel):
    """The Vertex AI prediction response: one prediction per instance, in order."""

    predictions: list[LabelScores]


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' once the model is loaded")
    model: str = Field(description="the run folder or URL being served")
    labels: list[str] = Field(description="the classes, in score order")


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong with the request and how to fix it")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body is not valid JSON"},
    413: {"model": ErrorResponse, "description": "too large: body, instance count or text length"},
    415: {"model": ErrorResponse, "description": "the Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "the JSON does not match the request schema"},
}


# ----------------------------------------------------------------------------- the application


def create_app(predictor, settings: ServeSettings) -> FastAPI:
    """The FastAPI app serving `predictor` (a `Predictor`, or anything with its `tokens_of`,
    `probabilities_of`, `labels` and `classifier.source`) under `settings`; the batcher's model thread runs
    while the app's lifespan does."""
    labels = list(predictor.labels)
    source = str(predictor.classifier.source)
    workers, threads = model_workers(predictor, settings.model_workers)
    packed = isinstance(getattr(predictor, "scorer", None), PackedClassifier)
    batcher = TokenBatcher(
        predictor.probabilities_of,
        max_batch=settings.max_batch,
        max_batch_tokens=settings.max_batch_tokens or auto_batch_tokens(packed),
        model_batch=settings.model_batch,
        max_wait_ms=settings.max_wait_ms,
        workers=workers,
        threads_per_worker=threads,
        packed=packed,
    )

    async def probabilities(texts: list[str]) -> tuple[np.ndarray, int]:
        if len(texts) <= TOKENIZE_INLINE_POSTS:
            tokens = predictor.tokens_of(texts)
        else:
            tokens = await asyncio.get_running_loop().run_in_executor(None, predictor.tokens_of, texts)
        return await batcher.predict(tokens)

    def predictions_of(probs: np.ndarray) -> list[dict]:
        return [
            {"label": labels[int(row.argmax())], "scores": dict(zip(labels, row.tolist(), strict=True))}
            for row in probs
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)
            log.info(
                f"stopped serving {source}",
                extra={
                    "json_fields": {
                        "model_calls": batcher.batches,
                        "largest_batch_requests": batcher.largest_batch_requests,
                    }
                },
            )

    app = FastAPI(
        title="sentitune",
        version=__version__,
        description=(
            f"Sentiment ({', '.join(labels)}) of social-media posts with the model in {source}. "
            "Follows the Vertex AI custom prediction container contract."
        ),
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.settings = settings

    @app.get(settings.health_route, response_model=HealthResponse, summary="health check")
    async def health() -> dict:
        return {"status": "ok", "model": source, "labels": labels}

    if not settings.no_ui:
        add_demo_page(app, settings, labels, source)

    @app.post(
        settings.predict_route,
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="label posts",
        description=(
            f"At most {settings.max_instances} instances of at most {settings.max_text_chars} characters "
            f"each, in a body of at most {settings.max_body_bytes} bytes sent as application/json. "
            "Texts longer than the run's max length in tokens are truncated."
        ),
    )
    async def predict(body: PredictRequest, request: Request) -> dict:
        texts = [i if isinstance(i, str) else i[0] if isinstance(i, list) else i.text for i in body.instances]
        request.state.instances = len(texts)
        check_texts(texts, settings)
        wanted = wants_explanation(body.parameters, len(texts))
        probs, batch_requests = await probabilities(texts)
        request.state.batch_requests = batch_requests
        predictions = predictions_of(probs)
        if wanted:
            for prediction, why in zip(
                predictions, await batcher.run_alone(explain, predictor, texts), strict=True
            ):
                prediction["explanation"] = why
        return {"predictions": predictions}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = describe_validation_errors(exc.errors(), exc.body)
        return error_response(request, status, message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, and uvicorn logs the traceback.
        return error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}")

    async def plain_predict(texts: list[str]) -> tuple[bytes, int]:
        """The answer to a request of plain strings, serialised as the route's response would be."""
        check_texts(texts, settings)
        probs, batch_requests = await probabilities(texts)
        return JSONResponse({"predictions": predictions_of(probs)}).body, batch_requests

    app.add_middleware(RequestGuard, settings=settings, plain_predict=plain_predict)
    return app


def auto_batch_tokens(packed: bool) -> int:
    """--max-batch-tokens 0: the budget measured best (docs/benchmarks/serving.md, 64 clients on 2 cores):
    512 of the posts' own tokens for a packed model (passes of similar posts, answered sooner), 1024
    counting padding otherwise (512 served 13 % fewer posts with the int8 export)."""
    return 512 if packed else 1024


def model_workers(predictor, asked: int) -> tuple[int, int | None]:
    """How many model threads run forward passes side by side, and the torch threads each has (None: as
    set). `asked` 0 is auto: two for PyTorch on a CPU with two threads or more, each with half of them.
    Measured on 2 cores (docs/benchmarks/serving.md): a model thread whose two torch threads share the cores
    with the server's own work waits on whichever thread the request handling preempted; two model threads
    of one torch thread each do not wait on each other."""
    threads = torch.get_num_threads()
    on_cpu = (
        getattr(predictor, "backend", "torch") == "torch"
        and str(getattr(predictor, "device", "cpu")) == "cpu"
    )
    workers = asked or (2 if on_cpu and threads >= 2 else 1)
    return workers, (max(1, threads // workers) if on_cpu and workers > 1 else None)


def wants_explanation(parameters: dict | None, count: int) -> bool:
    """Whether the request asks `"explain": true`, refused (413, 422) where it cannot be answered."""
    wanted = (parameters or {}).get("explain", False)
    if not isinstance(wanted, bool):
        raise HTTPException(422, f"parameters.explain must be true or false, got {_preview(wanted)}")
    if wanted and count > MAX_EXPLAIN:
        raise HTTPException(413, f"explain takes at most {MAX_EXPLAIN} instances per request, got {count}")
    return wanted


UI_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# The demo page runs its own script and style only, talks to this server only, and cannot be framed.
UI_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def add_demo_page(app: FastAPI, settings: ServeSettings, labels: list[str], source: str) -> None:
    """GET / : a page to paste posts (or drop a CSV) and see their labels, scores and explanations, sent
    to the predict route like any client; its script and style are served beside it."""
    folder = importlib.resources.files("sentitune").joinpath("ui")
    page = folder.joinpath("index.html").read_text(encoding="utf-8")
    for key, value in {
        "predict_route": settings.predict_route,
        "max_instances": min(settings.max_instances, MAX_UI_POSTS),
        "labels": ",".join(labels),
        "model": source,
        "max_explain": MAX_EXPLAIN,
    }.items():
        page = page.replace("{" + key + "}", html.escape(str(value), quote=True))
    assets = {name: folder.joinpath(name).read_bytes() for name in UI_FILES}
    headers = {"Content-Security-Policy": UI_POLICY, "X-Content-Type-Options": "nosniff"}

    @app.get("/", include_in_schema=False)
    async def demo_page() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get("/ui/{name}", include_in_schema=False)
    async def demo_asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no {name} here")
        return Response(assets[name], media_type=UI_FILES[name], headers=headers)


def error_response(request: Request, status: int, message: str, headers=None) -> JSONResponse:
    request.state.error = message  # for the request's log line
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def check_texts(texts: Sequence[str], settings: ServeSettings) -> None:
    """Raise a 413 or 422 HTTPException naming every instance that cannot be predicted."""
    if not texts:
        raise HTTPException(422, "'instances' is empty; send at least one text")
    if len(texts) > settings.max_instances:
        raise HTTPException(
            413,
            f"{len(texts)} instances in one request; the limit is {settings.max_instances} "
            "(--max-instances): split the request",
        )
    too_long = [i for i, t in enumerate(texts) if len(t) > settings.max_text_chars]
    if too_long:
        raise HTTPException(
            413,
            "; ".join(f"instances[{i}] is {len(texts[i])} characters long" for i in too_long[:5])
            + _more(too_long)
            + f"; the limit is {settings.max_text_chars} characters (--max-text-chars)",
        )
    _refuse(
        [i for i, t in enumerate(texts) if not _encodable(t)],
        "not valid Unicode text (a lone surrogate such as \\ud800); send UTF-8 text",
    )
    _refuse(
        [i for i, t in enumerate(texts) if not t.strip()], "empty or only whitespace; send text to classify"
    )


def _refuse(indices: list[int], problem: str) -> None:
    """A 422 naming the instances (the first five) that have `problem`, if any do."""
    if indices:
        named = ", ".join(f"instances[{i}]" for i in indices[:5]) + _more(indices)
        raise HTTPException(422, f"{named} {'is' if len(indices) == 1 else 'are'} {problem}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def describe_validation_errors(errors: Sequence[dict], body: Any) -> tuple[int, str]:
    """FastAPI's validation errors as one message a caller can act on, and the status to send."""
    shape = 'send {"instances": ["a post", {"text": "another post"}]}'
    messages: list[str] = []
    bad_instances: list[int] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))[1:]  # drop "body"
        if error.get("type") == "json_invalid":
            where = f" at character {loc[0]}" if loc else ""
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return 400, f"the request body is not valid JSON ({reason}{where}); {shape}"
        if not loc:
            got = "nothing" if body in (None, b"", "") else f"a JSON {_json_type(body)}"
            messages.append(f"the request body must be a JSON object, got {got}; {shape}")
        elif loc[0] == "instances" and len(loc) == 1:
            if error.get("type") == "missing":
                messages.append(f"the request has no 'instances' field; {shape}")
            else:
                got = _json_type(body.get("instances")) if isinstance(body, dict) else "?"
                messages.append(f"'instances' must be a list, got a JSON {got}; {shape}")
        elif loc == ("parameters",):
            got = _json_type(body.get("parameters")) if isinstance(body, dict) else "?"
            messages.append(f"'parameters' must be a JSON object or null, got a JSON {got}")
        elif loc[0] == "instances" and isinstance(loc[1], int):
            if loc[1] not in bad_instances:
                bad_instances.append(loc[1])
        else:
            messages.append(f"{'.'.join(str(p) for p in loc)}: {error.get('msg')}")
    for i in bad_instances[:5]:
        value = body["instances"][i] if isinstance(body, dict) else None
        messages.append(
            f'instances[{i}] must be a string, an object {{"text": "..."}} or a one-column row ["..."], '
            f"got {_preview(value)}"
        )
    if len(bad_instances) > 5:
        messages.append(f"{len(bad_instances) - 5} more instances are wrong the same way")
    return 422, "; ".join(messages) or "the request does not match the schema"


def _more(indices: list[int]) -> str:
    return f" (and {len(indices) - 5} more)" if len(indices) > 5 else ""


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- batching by a token budget


@dataclass
class _Pending:
    tokens: TokenizedTexts
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class TokenBatcher:
    """Runs the model on threads of its own (`workers`, each with `threads_per_worker` torch threads), over
    the queued requests cut into forward passes by a budget of tokens (the design of Hugging Face's
    text-embeddings-inference, in Python).

    Requests arrive tokenised (the event loop tokenises while the model computes) and wait in a queue. As
    soon as a model thread is free, it takes every queued request, up to `max_batch` posts (a larger
    request alone), sorts their posts by length and cuts them into passes of at most `model_batch` posts and
    `max_batch_tokens` tokens counting padding, or the posts' own tokens where the model runs them packed (a
    longer post alone). A request is answered as soon as the pass holding its last post is done, so its
    client's next request queues while the other passes run: under load the model never waits for HTTP,
    and nothing waits on a timer. Only a request that finds the model idle waits, up to `max_wait_ms`, for
    others to join it.
    """

    def __init__(
        self,
        score: Callable[[TokenizedTexts], np.ndarray],
        *,
        max_batch: int,
        max_batch_tokens: int,
        model_batch: int,
        max_wait_ms: float = 0.0,
        workers: int = 1,
        threads_per_worker: int | None = None,
        packed: bool = False,
    ):
        self.score = score
        self.padded = not packed
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.model_batch = model_batch
        self.max_wait_s = max_wait_ms / 1000
        self.batches = 0
        self.largest_batch_requests = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_posts = 0
        self._changed = threading.Condition()
        # One lock per model thread, held while it runs a batch: `run_alone` takes them all.
        self._models = [threading.Lock() for _ in range(workers)]
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, args=(lock,), name=f"sentitune-model-{i}", daemon=True)
            for i, lock in enumerate(self._models)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish the batch being run, then fail whatever is still queued."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()
        left, self._queue = list(self._queue), collections.deque()
        self._answer([(p, RuntimeError("the server is shutting down")) for p in left])

    async def predict(self, tokens: TokenizedTexts) -> tuple[np.ndarray, int]:
        """Class probabilities of the tokenised posts, and how many requests shared their batch."""
        loop = asyncio.get_running_loop()
        pending = _Pending(tokens, loop.create_future(), loop)
        with self._changed:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._queue.append(pending)
            self._queued_posts += len(tokens)
            self._changed.notify()
        return await pending.future

    async def run_alone(self, fn, *args):
        """`fn(*args)` on another thread while the model threads wait (between their passes)."""

        def alone():
            with contextlib.ExitStack() as held:
                for lock in self._models:  # always in this order: no two callers hold part each
                    held.enter_context(lock)
                if not self.threads_per_worker:
                    return fn(*args)
                # The model threads' own counts set torch's default to their share: with them all
                # waiting, this runs on every thread they have between them, then leaves the share.
                torch.set_num_threads(self.threads_per_worker * self.workers)
                try:
                    return fn(*args)
                finally:
                    torch.set_num_threads(self.threads_per_worker)

        return await asyncio.get_running_loop().run_in_executor(None, alone)

    def _run(self, lock: threading.Lock) -> None:
        if self.threads_per_worker:
            torch.set_num_threads(self.threads_per_worker)
        while (batch := self._take()) is not None:
            with lock:
                try:
                    self._run_batch(batch)
                except Exception as exc:  # a model thread must outlive any one batch
                    log.exception("a batch failed outside the model")
                    self._answer([(pending, exc) for pending in batch])

    def _take(self) -> list[_Pending] | None:
        """The next batch, once there is one (None: stopping)."""
        with self._changed:
            while True:
                idle = not self._queue
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return None
                if idle and self.max_wait_s:
                    deadline = time.monotonic() + self.max_wait_s
                    while self._queued_posts < self.max_batch and not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._changed.wait(remaining)
                if self._queue:  # (another model thread may have taken it while this one waited)
                    break
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].tokens) <= self.max_batch):
                batch.append(self._queue.popleft())
                size += len(batch[-1].tokens)
            self._queued_posts -= size
            self.batches += 1
            self.largest_batch_requests = max(self.largest_batch_requests, len(batch))
            return batch

    def _run_batch(self, batch: list[_Pending]) -> None:
        shared = len(batch)
        sizes = np.array([len(p.tokens) for p in batch])
        starts = np.concatenate([[0], np.cumsum(sizes)])
        owner = np.repeat(np.arange(len(batch)), sizes)  # the request each post of the batch came from
        left = sizes.copy()  # posts of each request not scored yet
        tokens = TokenizedTexts.concat([p.tokens for p in batch])
        out: np.ndarray | None = None
        for rows in passes_within_budget(
            tokens.lengths, self.max_batch_tokens, self.model_batch, self.padded
        ):
            try:
                probs = self.score(tokens.subset(rows))
            except Exception:
                # One request's posts must not fail the others': each unanswered request runs alone.
                for i in np.flatnonzero(left):
                    self._run_request_alone(batch[i], shared)
                return
            if out is None:
                out = np.empty((len(tokens), probs.shape[1]), probs.dtype)
            out[rows] = probs
            requests = owner[rows]
            np.subtract.at(left, requests, 1)
            done = [i for i in np.unique(requests) if left[i] == 0]
            self._answer([(batch[i], (out[starts[i] : starts[i + 1]].copy(), shared)) for i in done])

    def _run_request_alone(self, pending: _Pending, shared: int) -> None:
        try:
            tokens, out = pending.tokens, None
            for rows in passes_within_budget(
                tokens.lengths, self.max_batch_tokens, self.model_batch, self.padded
            ):
                probs = self.score(tokens.subset(rows))
                if out is None:
                    out = np.empty((len(tokens), probs.shape[1]), probs.dtype)
                out[rows] = probs
            self._answer([(pending, (out, shared))])
        except Exception as exc:
            self._answer([(pending, exc)])

    @staticmethod
    def _answer(answers: list[tuple[_Pending, Any]]) -> None:
        """Hand results (or exceptions) to the requests' event loops: one wake-up per loop, not per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for pending, result in answers:
            by_loop.setdefault(pending.loop, []).append((pending.future, result))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a loop already closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in results:
        if future.done():  # a caller that went away
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


# ----------------------------------------------------------------------------- transport and logs


class RequestGuard:
    """ASGI middleware: checks the body size and content type before FastAPI parses anything, and
    writes one JSON log line per request (route, status, instances, latency).

    A prediction request of plain strings without an explanation, the request a client sends most, is
    answered here by `plain_predict`: FastAPI's routing, validation and response model cost as much CPU as
    the rest of the request's handling together, CPU that the model shares on a small machine. Any other
    request, and any request with a problem, goes to FastAPI, which answers it as the API describes."""

    def __init__(self, app, settings: ServeSettings, plain_predict=None):
        self.app = app
        self.settings = settings
        self.plain_predict = plain_predict

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status, logged = 500, False

        async def send_and_log(message) -> None:
            nonlocal status, logged
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and not logged:
                # Logged before the last byte leaves, so a client that has its answer sees the log line.
                logged = True
                self._log(scope, state, status, started)
            await send(message)

        try:
            body, problem = b"", None
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body, problem = await self._read_body(receive)
                if body is None:  # the client went away
                    return
            problem = problem or self._check_content_type(scope)
            if problem is not None:
                state["error"] = problem[1]
                close = {"connection": "close"} if problem[0] == 408 else None  # the rest may never come
                response = JSONResponse({"error": problem[1]}, status_code=problem[0], headers=close)
                await response(scope, receive, send_and_log)
                return
            if await self._answer_plain(scope, body, state, send_and_log):
                return
            await self.app(scope, _replay(body, receive), send_and_log)
        except Exception:
            if not logged:
                self._log(scope, state, 500, started)
            raise

    async def _answer_plain(self, scope, body: bytes, state: dict, send) -> bool:
        """Answer a prediction request of plain strings; False if it is not one, or has a problem."""
        if (
            self.plain_predict is None
            or scope["method"] != "POST"
            or scope["path"] != self.settings.predict_route
        ):
            return False
        texts = plain_instances(body)
        if texts is None:
            return False
        try:
            payload, batch_requests = await self.plain_predict(texts)
        except HTTPException:
            return False  # FastAPI finds the problem again and answers it with the other errors
        state.update(instances=len(texts), batch_requests=batch_requests)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True

    def _check_content_type(self, scope) -> tuple[int, str] | None:
        if scope["method"] != "POST" or scope["path"] != self.settings.predict_route:
            return None
        content_type = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-type"), ""
        )
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
            return None
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        return 415, f"the request has {got}; send the JSON body with Content-Type: application/json"

    async def _read_body(self, receive) -> tuple[bytes | None, tuple[int, str] | None]:
        """The whole body, or the problem with it. An oversized body is still read to its end (up to a
        bound) so that the client, still sending, gets our 413 rather than a reset connection; a body that
        does not arrive within --body-timeout-s (a slow client, a Content-Length larger than what is sent)
        gets a 408."""
        limit = self.settings.max_body_bytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout_s
        chunks, size = [], 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):  # no task per message, unlike wait_for
                    message = await receive()
            except TimeoutError:
                return b"", (
                    408,
                    f"the request body did not arrive within {self.settings.body_timeout_s:g} s "
                    "(--body-timeout-s); send the whole body, with a Content-Length that matches it",
                )
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            if not message.get("more_body") or size > 16 * limit:
                break
        if size > limit:
            return b"", (
                413,
                f"the request body is over {limit} bytes (--max-body-bytes): "
                "send fewer or shorter instances per request",
            )
        return b"".join(chunks), None

    def _log(self, scope, state: dict, status: int, started: float) -> None:
        fields_ = {
            "method": scope["method"],
            "route": scope["path"],
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        for key in ("instances", "batch_requests", "error"):
            if key in state:
                fields_[key] = state[key]
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, f"{scope['method']} {scope['path']} {status}", extra={"json_fields": fields_})


def plain_instances(body: bytes) -> list[str] | None:
    """The texts of a body `{"instances": ["...", ...]}` (with `"parameters"` that ask no explanation, or
    none); None for any other body."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or not set(request) <= {"instances", "parameters"}:
        return None
    texts, parameters = request.get("instances"), request.get("parameters")
    if type(texts) is not list or not texts or not all(type(t) is str for t in texts):
        return None
    if parameters is not None and (
        type(parameters) is not dict or parameters.get("explain", False) is not False
    ):
        return None
    return texts


def _replay(body: bytes, receive):
    """A `receive` that hands the already-read body to the app, then defers to the client's."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
