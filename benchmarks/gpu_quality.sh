#!/usr/bin/env bash
# Model quality on one CUDA GPU: the `full` and `vader` grids of quality.py, JOBS settings trained at
# once (batch-32 steps of these small models leave a GPU mostly idle), then both tables as JSON lines
# on stdout. About 5-10 minutes on one H100 with JOBS=7; the runs go to WORK (default quality-runs/gpu).
#
#   JOBS=7 WORK=quality-runs/gpu bash benchmarks/gpu_quality.sh [quality.py options, e.g. --only ...]
#
# Packages and data as for gpu.sh (.whl/ on a machine with no package index; SENTITUNE_SHARED).
# Figures differ from a CPU run's in the last digits (bf16 autocast, other kernels), not in kind.
set -euo pipefail
source "$(dirname "$0")/gpu_env.sh"
JOBS=${JOBS:-7}
WORK=${WORK:-quality-runs/gpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # each training's host side needs one thread
$PY benchmarks/quality.py --grid full --jobs "$JOBS" --work "$WORK/full" --markdown "$@" &
full=$!
$PY benchmarks/quality.py --grid vader --jobs "$JOBS" --work "$WORK/vader" --markdown "$@" &
vader=$!
wait $full && wait $vader
