#!/usr/bin/env bash
# Model quality on one CUDA GPU: the `full` and `vader` grids of quality.py side by side, each training
# JOBS of its settings at once (batch-32 steps of these small models leave a GPU mostly idle), then both
# reports as JSON lines on stdout. On one H100, five settings at once (JOBS=4, with --only) took under
# 3 minutes; all of both grids take longer (vader-e10 alone trains 380,000 examples). Runs go to WORK
# (default quality-runs/gpu); a rerun skips the settings already there.
#
#   JOBS=4 WORK=quality-runs/gpu bash benchmarks/gpu_quality.sh [quality.py options, e.g. --only ...]
#
# Packages and data as for gpu.sh (.whl/ on a machine with no package index; SENTITUNE_SHARED).
# Figures differ from a CPU run's by up to half a point (bf16 autocast, other kernels), not in kind.
set -euo pipefail
source "$(dirname "$0")/gpu_env.sh"
JOBS=${JOBS:-4}
WORK=${WORK:-quality-runs/gpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # each training's host side needs one thread
$PY benchmarks/quality.py --grid full --jobs "$JOBS" --work "$WORK/full" --markdown "$@" &
full=$!
$PY benchmarks/quality.py --grid vader --jobs "$JOBS" --work "$WORK/vader" --markdown "$@" &
vader=$!
wait $full && wait $vader
