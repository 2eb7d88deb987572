#!/usr/bin/env python3
"""Load test of `sentitune serve` on localhost with wrk and locust; prints one JSON object.

First the server against the model's own speed: for each --ratio-backends and --posts-per-request, in
--rounds rounds, the offline `Predictor` scores the 2,000 validation tweets (passes of 64 sorted by
length, in this process), then the server, on the same run, serves --ratio-clients closed-loop clients
for --ratio-seconds; offline and served alternate, so each round's ratio (served / offline posts/s) holds
whatever else the machine was doing at the time. A ratio backend may carry environment variables for its
server and its offline Predictor and options for its server (`torch@SENTITUNE_PACK=0 --max-batch-tokens=1024`);
the backends take turns within each round.
wrk drives these rounds where it is installed (--load-generator; locust costs ~10x its CPU per request,
taken from the server's cores).

Then, for each backend (PyTorch, ONNX fp32, ONNX int8) the real server runs as its own process on this
machine, and locust's headless runner drives it with 1, 8 and 64 concurrent clients, each sending one
tweet per request (real posts from the TweetEval validation split) as fast as answers come back.
Figures per backend and concurrency: requests/s (= tweets/s), latency p50 / p90 / p99, failures and
5xx answers, and the server's RSS. Then a soak per --soak-backends: --soak-seconds at 64 clients with
malformed requests mixed in, the server's RSS sampled every 10 s and its growth after warm-up.

The load generator shares the machine's cores with the server (2 on the reference machine); its CPU
time is reported, so the figures are a floor for a server with the machine to itself.

usage: serve_load.py [--run RUN_DIR] [--ratio-backends torch,onnx-int8] [--posts-per-request 1,8]
                     [--rounds 2] [--ratio-seconds 15] [--backends torch,onnx,onnx-int8]
                     [--clients 1,8,64] [--seconds 20] [--soak-seconds 60] [--soak-backends onnx-int8]
                     [--malformed 0.1]
       serve_load.py --summarise RESULT.json [...]
--summarise prints, per server, backend and posts per request, the medians of the served/offline rounds
in results this script wrote (or files holding several of them as `runs`, each named by `server`).
The soak sends --malformed of its requests malformed (cut-off JSON, no instances, not text, a lone
surrogate, the wrong content type, too many instances): each must get its 4xx, none a 5xx.
Without --run, a run like `make demo`'s (the embedded MiniLM cut to 3 layers, `--preset fast`) is trained
for --train-steps steps on the shared tweets (briefly trained weights are enough for speed; use a fully
trained run for the int8 accuracy figure).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import TRAIN_CSV, VAL_CSV, emit, log, machine_info  # noqa: E402

from sentitune.serve import choose_backend  # noqa: E402

BIN = Path(sys.executable).parent
LOCUSTFILE = """
import json, os, random
from locust import FastHttpUser, constant, task

TEXTS = [line for line in open(os.environ["LOAD_TEXTS"], encoding="utf-8").read().split("\\n") if line]
MALFORMED = float(os.environ.get("LOAD_MALFORMED", "0"))
POSTS = int(os.environ.get("LOAD_POSTS", "1"))  # posts per request
JSON = "application/json"
# (body, content type, the status it must get): each a mistake a real client makes
BAD = [
    (b'{"instances": [', JSON, 400),                           # cut-off JSON
    (b'{"inputs": ["a post"]}', JSON, 422),                    # no instances
    (b'{"instances": "a post"}', JSON, 422),                   # not a list
    (b'{"instances": [42]}', JSON, 422),                       # not text
    (b'{"instances": [""]}', JSON, 422),                       # empty text
    (b'{"instances": ["caf\\\\ud800"]}', JSON, 422),        # a lone surrogate: not Unicode
    (b'{"instances": ["a post"]}', "text/plain", 415),         # wrong content type
    (json.dumps({"instances": ["x"] * 1001}).encode(), JSON, 413),  # too many instances
]


class Client(FastHttpUser):
    wait_time = constant(0)  # closed loop: the next request leaves when the answer is back

    @task
    def predict(self):
        if MALFORMED and random.random() < MALFORMED:
            body, content_type, expected = random.choice(BAD)
            with self.client.post("/predict", data=body, headers={"Content-Type": content_type},
                                  name="malformed", catch_response=True) as response:
                if response.status_code != expected or "error" not in (response.text or ""):
                    response.failure(f"status {response.status_code}, expected {expected}")
                else:
                    response.success()
            return
        body = json.dumps({"instances": random.sample(TEXTS, POSTS)})
        with self.client.post("/predict", data=body, headers={"Content-Type": JSON},
                              name="good", catch_response=True) as response:
            if response.status_code != 200 or "predictions" not in (response.text or ""):
                response.failure(f"status {response.status_code}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a finished `sentitune train` run folder (copied; export added)")
    parser.add_argument(
        "--ratio-backends",
        default="torch,onnx-int8",
        help="backends measured against the offline Predictor ('': none)",
    )
    parser.add_argument("--posts-per-request", default="1,8", help="for the ratio measurement")
    parser.add_argument("--rounds", type=int, default=2, help="offline / served rounds per point")
    parser.add_argument("--ratio-seconds", type=int, default=15, help="served seconds per round")
    parser.add_argument("--ratio-clients", type=int, default=64)
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "locust"),
        default="auto",
        help="what drives the ratio rounds (auto: wrk where installed, else locust; the load table and the "
        "soak always use locust, which checks every answer)",
    )
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="load table backends ('': none)")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--seconds", type=int, default=20, help="per backend and concurrency")
    parser.add_argument("--soak-seconds", type=int, default=60, help="64 clients per soak backend (0: none)")
    parser.add_argument("--soak-backends", default="onnx-int8", help="backends soaked, e.g. torch,onnx-int8")
    parser.add_argument(
        "--malformed", type=float, default=0.1, help="fraction of malformed requests in a soak"
    )
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument(
        "--serve-options", default="", help="more `sentitune serve` options, e.g. '--max-wait-ms 0'"
    )
    parser.add_argument(
        "--summarise", nargs="+", metavar="JSON", help="medians of earlier results; runs nothing"
    )
    args = parser.parse_args()
    if args.summarise:
        emit(summarise(args.summarise))
        return 0
    backends = [b for b in args.backends.split(",") if b]
    ratio_backends = [b for b in args.ratio_backends.split(",") if b]
    soak_backends = [b for b in args.soak_backends.split(",") if b] if args.soak_seconds else []
    clients = [int(c) for c in args.clients.split(",")]

    work = Path(tempfile.mkdtemp(prefix="sentitune-load-"))
    try:
        needs_export = any(b.startswith("onnx") for b in [*backends, *ratio_backends, *soak_backends])
        args.load_generator = load_generator(args.load_generator)
        run = prepare_run(args.run, work, args.train_steps, needs_export)
        report = run / "onnx" / "export_report.json"
        export = json.loads(report.read_text()) if report.exists() else {"models": {}}
        texts = work / "texts.txt"
        with open(VAL_CSV, encoding="utf-8") as f:
            posts = [row["text"].replace("\n", " ") for row in csv.DictReader(f)]
        texts.write_text("\n".join(posts) + "\n", encoding="utf-8")
        write_wrk_bodies(work, posts, [int(n) for n in args.posts_per_request.split(",")])
        (work / "locustfile.py").write_text(LOCUSTFILE)

        machine = machine_info()
        result = {
            "benchmark": "serve_load",
            "machine": machine,
            "cpu_kind": cpu_kind(machine),
            "run": args.run
            or f"embedded MiniLM cut to 3 layers (--preset fast), trained {args.train_steps} steps",
            "model": json.loads((run / "run_config.json").read_text())["model"],
            "request": "one tweet per request, TweetEval validation posts, closed-loop clients",
            "seconds_per_point": args.seconds,
            "serve_options": args.serve_options,
            "int8_parity": export["models"].get("int8"),
            "default_backend": dict(
                zip(("backend", "reason"), choose_backend("auto", str(run)), strict=True)
            ),
            "served_against_offline": {},
            "backends": {},
        }
        if ratio_backends:
            result["served_against_offline"] = served_against_offline(work, run, posts, ratio_backends, args)
        for backend in backends:
            with Server(run, backend, args.serve_options.split()) as server:
                points = {}
                for n in clients:
                    points[str(n)] = locust(work, server.port, n, args.seconds)
                    points[str(n)]["server_rss_mib"] = server.rss_mib()
                    log(f"{backend} x{n}: {points[str(n)]}")
                result["backends"][backend] = {"load_s": server.load_s, "clients": points}
        for backend in soak_backends:
            with Server(run, backend, args.serve_options.split()) as server:
                result.setdefault("soak", {})[backend] = soak(work, server, args)
                log(f"soak {backend}: {result['soak'][backend]}")
        emit(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def served_against_offline(work: Path, run: Path, posts: list[str], specs: list[str], args) -> dict:
    """Per spec (a backend, `BACKEND@VAR=VALUE --option=VALUE ...` with environment variables set for its
    server and its offline Predictor and options for its server, `parse_spec`) and posts-per-request count, --rounds rounds of (the
    offline Predictor over `posts`, then the server under --ratio-clients closed-loop clients): posts/s of
    each and their ratio, round by round. The specs take turns within each round, in an order reversed
    from round to round, so that what else the machine does falls on all of them alike."""
    from sentitune.scoring import Predictor

    measured: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        for spec in specs:
            backend, env, options = parse_spec(spec)
            with environment(env):
                predictor = Predictor(str(run), backend=backend)
            predictor.probabilities(posts)  # first call: allocations, kernels for every shape
            server = stack.enter_context(Server(run, backend, [*args.serve_options.split(), *options], env))
            measured[spec] = {
                "precision": str(predictor.precision),
                "forward": getattr(predictor, "scorer_reason", None),
                "environment": env,
                "serve_options": options,
                "offline": f"Predictor.probabilities over the {len(posts)} posts, passes of "
                f"{predictor.batch_size} sorted by length, twice per round",
                "load_generator": args.load_generator,
                "clients": args.ratio_clients,
                "seconds": args.ratio_seconds,
                "posts_per_request": {},
                "_predictor": predictor,
                "_server": server,
            }
        for per_request in [int(n) for n in args.posts_per_request.split(",")]:
            for spec in specs:  # warm-up
                drive(args, work, measured[spec]["_server"].port, args.ratio_clients, 3, posts=per_request)
                measured[spec]["posts_per_request"][str(per_request)] = []
            for i in range(args.rounds):
                for spec in specs if i % 2 == 0 else specs[::-1]:
                    row = one_round(work, measured[spec], posts, per_request, args)
                    measured[spec]["posts_per_request"][str(per_request)].append({"round": i + 1, **row})
                    log(f"{spec}, {per_request} posts per request, round {i + 1}: {row}")
        for spec in specs:
            measured[spec]["server_rss_mib"] = measured[spec].pop("_server").rss_mib()
            measured[spec].pop("_predictor")
    return measured


def one_round(work: Path, setup: dict, posts: list[str], per_request: int, args) -> dict:
    predictor, server = setup["_predictor"], setup["_server"]
    started, cpu_started = time.perf_counter(), time.process_time()
    predictor.probabilities(posts)
    predictor.probabilities(posts)
    offline = 2 * len(posts) / (time.perf_counter() - started)
    offline_per_cpu_s = 2 * len(posts) / (time.process_time() - cpu_started)
    server_cpu = server.cpu_s()
    served = drive(args, work, server.port, args.ratio_clients, args.ratio_seconds, posts=per_request)
    served_cpu = server.cpu_s() - server_cpu + served["load_generator_cpu_s"]
    served_per_cpu_s = served["requests"] * per_request / served_cpu
    return {
        "offline_posts_per_s": round(offline, 1),
        "served_posts_per_s": served["tweets_per_s"],
        "ratio": round(served["tweets_per_s"] / offline, 3),
        # per CPU-second (the server's and the load generator's against the offline process's): what
        # serving costs beside the model, whatever else the machine runs
        "offline_posts_per_cpu_s": round(offline_per_cpu_s, 1),
        "served_posts_per_cpu_s": round(served_per_cpu_s, 1),
        "cpu_ratio": round(served_per_cpu_s / offline_per_cpu_s, 3),
        "p50_ms": served["p50_ms"],
        "p99_ms": served["p99_ms"],
        "failures": served["failures"],
        "load_generator_cpu_s": served["load_generator_cpu_s"],
    }


def parse_spec(spec: str) -> tuple[str, dict[str, str], list[str]]:
    """`BACKEND@VAR=VALUE --serve-option=VALUE ...`: the backend, its environment and its server's options."""
    backend, _, settings = spec.partition("@")
    items = settings.split()
    env = dict(item.split("=", 1) for item in items if "=" in item and not item.startswith("--"))
    return backend, env, [item for item in items if item.startswith("--")]


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summarise(paths: list[str]) -> dict:
    """Per (server, backend, posts per request): the rounds' medians and the ratio's range."""
    rounds: dict[tuple[str, str, str], list[dict]] = {}
    for path in paths:
        found = json.loads(Path(path).read_text())
        for run in found.get("runs") or [{"server": Path(path).stem, "result": found}]:
            for backend, ratio in run["result"]["served_against_offline"].items():
                for per_request, measured in ratio["posts_per_request"].items():
                    rounds.setdefault((run["server"], backend, per_request), []).extend(measured)
    points = []
    for (server, backend, per_request), measured in rounds.items():
        median = {
            k: statistics.median(r[k] for r in measured)
            for k in ("offline_posts_per_s", "served_posts_per_s", "ratio")
        }
        points.append(
            {
                "server": server,
                "backend": backend,
                "posts_per_request": int(per_request),
                "rounds": len(measured),
                **{f"median_{k}": round(v, 3 if k == "ratio" else 1) for k, v in median.items()},
                "ratio_range": [min(r["ratio"] for r in measured), max(r["ratio"] for r in measured)],
            }
        )
    return {"benchmark": "serve_load summary", "files": paths, "points": points}


def cpu_kind(machine: dict) -> str:
    """The CPU kind the serving defaults differ by: AMX, AVX512-BF16 without AMX, or AVX2 (no native bf16)."""
    features = machine["cpu_features"]
    if "AMX-BF16" in features:
        return "AMX"
    return "AVX512-BF16" if machine["native_bf16"] else "AVX2"


def soak(work: Path, server: Server, args) -> dict:
    """64 clients for --soak-seconds with --malformed of the requests malformed: every good request
    answered, every malformed one a 4xx, no 5xx; server RSS sampled every 10 s, its growth measured from
    the end of the first minute (warm-up: allocator pools, kernel caches) to the end."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.wait(10):
            samples.append((round(time.monotonic() - started), server.rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        found = locust(work, server.port, 64, args.soak_seconds, malformed=args.malformed)
    finally:
        done.set()
        sampler.join()
    warm = next(
        (rss for t, rss in samples if t >= min(60, args.soak_seconds / 2)), samples[0][1] if samples else None
    )
    end = samples[-1][1] if samples else server.rss_mib()
    found.update(
        clients=64,
        seconds=args.soak_seconds,
        malformed_fraction=args.malformed,
        server_5xx=server.count_5xx(),
        server_rss_after_warm_up_mib=warm,
        server_rss_end_mib=end,
        server_peak_rss_mib=server.peak_rss_mib(),
        server_rss_growth_after_warm_up_pct=round(100 * (end - warm) / warm, 2) if warm else None,
        server_rss_samples=samples,
    )
    return found


def prepare_run(given: str | None, work: Path, train_steps: int, needs_export: bool) -> Path:
    run = work / "run"
    if given:
        shutil.copytree(given, run, ignore=shutil.ignore_patterns("checkpoints", "evaluation-*"))
    else:
        sentitune(
            "train",
            "--training-file",
            str(TRAIN_CSV),
            "--validation-file",
            str(VAL_CSV),
            "--job-dir",
            str(run),
            "--preset",
            "fast",
            "--max-steps",
            str(train_steps),
            "--train-eval-examples",
            "0",
        )
    if needs_export and not (run / "onnx" / "export_report.json").exists():
        sentitune("export", str(run), "--quantize", "int8", "--overwrite")
    return run


def sentitune(*args: str) -> None:
    log("$ sentitune " + " ".join(args))
    subprocess.run([str(BIN / "sentitune"), "--quiet", *args], check=True, stdout=sys.stderr)


class Server:
    """`sentitune serve RUN --backend B` on a free localhost port, until the block ends."""

    def __init__(self, run: Path, backend: str, options: list[str] | None = None, env: dict | None = None):
        self.run, self.backend, self.options, self.env = run, backend, options or [], env or {}
        self.port = free_port()
        self.log_path = run.parent / f"serve-{backend}-{self.port}.log"

    def __enter__(self) -> Server:
        started = time.perf_counter()
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                str(BIN / "sentitune"),
                "serve",
                str(self.run),
                "--backend",
                self.backend,
                "--host",
                "127.0.0.1",
                *self.options,
            ],
            env={**os.environ, **self.env, "AIP_HTTP_PORT": str(self.port)},
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server for {self.backend} exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        self.load_s = round(time.perf_counter() - started, 2)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_file.close()

    def _status(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def rss_mib(self) -> float:
        return self._status("VmRSS")

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        return self._status("VmHWM")

    def count_5xx(self) -> int:
        count = 0
        for line in self.log_path.read_text().splitlines():
            try:
                status = json.loads(line).get("status")
            except ValueError:
                continue
            count += isinstance(status, int) and status >= 500
        return count


def locust(work: Path, port: int, clients: int, seconds: int, malformed: float = 0.0, posts: int = 1) -> dict:
    prefix = work / f"locust-{port}-{clients}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [
            str(BIN / "locust"),
            "-f",
            str(work / "locustfile.py"),
            "--headless",
            "--users",
            str(clients),
            "--spawn-rate",
            str(clients),
            "--run-time",
            f"{seconds}s",
            "--host",
            f"http://127.0.0.1:{port}",
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ],
        env={
            **os.environ,
            "LOAD_TEXTS": str(work / "texts.txt"),
            "LOAD_MALFORMED": str(malformed),
            "LOAD_POSTS": str(posts),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"locust failed: {stderr[-2000:]}")
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    found = summary(rows["Aggregated"], usage, posts)
    if malformed:  # the good requests' own figures (latency, rate) and the malformed ones' outcome
        found["good"] = summary(rows["good"], usage)
        found["malformed"] = {k: summary(rows["malformed"], usage)[k] for k in ("requests", "failures")}
    return found


WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("LOAD_BODIES")) do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/predict", nil, bodies[math.random(#bodies)])
end
done = function(summary, latency, requests)
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "failures": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %d}\\n',
    summary.requests, summary.duration, failed, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


def load_generator(asked: str) -> str:
    if asked == "auto":
        found = "wrk" if shutil.which("wrk") else "locust"
        if found == "locust":
            log(
                "wrk is not installed (apt install wrk): locust drives the ratio rounds, at ~0.2 ms of CPU a request"
            )
        return found
    if asked == "wrk" and not shutil.which("wrk"):
        raise SystemExit(
            "--load-generator wrk: wrk is not installed; apt install wrk, or --load-generator locust"
        )
    return asked


def write_wrk_bodies(work: Path, posts: list[str], counts: list[int]) -> None:
    """Request bodies for wrk, one per line: 4,000 per posts-per-request count, posts drawn at random."""
    import random

    rng = random.Random(0)
    for n in counts:
        with open(work / f"bodies-{n}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(4000):
                f.write(json.dumps({"instances": rng.sample(posts, n)}) + "\n")


def drive(args, work: Path, port: int, clients: int, seconds: int, posts: int = 1) -> dict:
    """--ratio-clients closed-loop clients for `seconds`, by args.load_generator."""
    if args.load_generator == "wrk":
        return wrk(work, port, clients, seconds, posts)
    return locust(work, port, clients, seconds, posts=posts)


def wrk(work: Path, port: int, clients: int, seconds: int, posts: int = 1) -> dict:
    """wrk (one thread, `clients` connections, each sending its next request when the answer is back):
    the figures `locust` gives, at a tenth of its CPU per request."""
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        env={**os.environ, "LOAD_BODIES": str(work / f"bodies-{posts}.jsonl")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"wrk failed: {err[-2000:]}")
    found = json.loads(out.strip().splitlines()[-1])
    return {
        "requests": found["requests"],
        "failures": found["failures"],
        "tweets_per_s": round(posts * found["requests"] / (found["duration_us"] / 1e6), 1),
        "p50_ms": round(found["p50_us"] / 1000, 1),
        "p90_ms": round(found["p90_us"] / 1000, 1),
        "p99_ms": round(found["p99_us"] / 1000, 1),
        "mean_ms": round(found["mean_us"] / 1000, 1),
        "load_generator_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def summary(row: dict, usage, posts: int = 1) -> dict:
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "tweets_per_s": round(posts * float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p90_ms": float(row["90%"]),
        "p99_ms": float(row["99%"]),
        "mean_ms": round(float(row["Average Response Time"]), 1),
        "load_generator_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
