"""`sentitune cloud build`: build the training/serving image and push it to Artifact Registry.

With Cloud Build (the default, no local Docker needed): `gcloud builds submit`; with `--builder docker`:
`docker build` + `docker push`. The tag is derived from project, region, repository and the package
version, so `cloud submit` and `cloud deploy` find the image without being told.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from sentitune.cloud.config import DOCKERFILES, BuildConfig
from sentitune.errors import SentituneError

log = logging.getLogger("sentitune")


def build_commands(cfg: BuildConfig, cloudbuild_config: str | None = None) -> list[list[str]]:
    dockerfile = DOCKERFILES[cfg.variant]
    if cfg.builder == "docker":
        return [
            [
                "docker",
                "build",
                "--file",
                str(Path(cfg.source) / dockerfile),
                "--tag",
                cfg.image_uri,
                cfg.source,
            ],
            ["docker", "push", cfg.image_uri],
        ]
    project = ["--project", cfg.project] if cfg.project else []
    # Cloud Build's default time limit and machine are sized for small builds, not a CUDA image of several GB.
    sized = [f"--timeout={cfg.build_timeout}", f"--machine-type={cfg.build_machine_type}"]
    if dockerfile == "Dockerfile":  # the walkthrough's command
        return [["gcloud", "builds", "submit", *project, *sized, "--tag", cfg.image_uri, cfg.source]]
    return [
        [
            "gcloud",
            "builds",
            "submit",
            *project,
            *sized,
            "--config",
            cloudbuild_config or "cloudbuild.yaml",
            cfg.source,
        ]
    ]


def cloudbuild_yaml(cfg: BuildConfig) -> str:
    """A one-step Cloud Build config: `--tag` can only build a file named Dockerfile."""
    return (
        "steps:\n"
        "- name: gcr.io/cloud-builders/docker\n"
        f"  args: [build, --file, {DOCKERFILES[cfg.variant]}, --tag, '{cfg.image_uri}', .]\n"
        f"images: ['{cfg.image_uri}']\n"
    )


def repository_hint(cfg: BuildConfig) -> str:
    host, project, repository = cfg.image_uri.split("/")[:3]
    location = host.removesuffix("-docker.pkg.dev")
    return (
        f"gcloud artifacts repositories create {repository} --project={project} "
        f"--repository-format=docker --location={location}"
    )


def build(cfg: BuildConfig) -> dict:
    """Run (or with dry_run, only list) the build and push commands; returns them and the image."""
    with tempfile.TemporaryDirectory(prefix="sentitune-build-") as tmp:
        config = None
        if cfg.builder == "cloud-build" and cfg.variant != "gpu":
            config = "cloudbuild.yaml" if cfg.dry_run else os.path.join(tmp, "cloudbuild.yaml")
            if not cfg.dry_run:
                Path(config).write_text(cloudbuild_yaml(cfg))
        commands = build_commands(cfg, config)
        result = {
            "image_uri": cfg.image_uri,
            "commands": [shlex.join(c) for c in commands],
            "repository_hint": repository_hint(cfg),
        }
        if config:
            result["cloudbuild.yaml"] = cloudbuild_yaml(cfg)
        if cfg.dry_run:
            return result
        for command in commands:
            if shutil.which(command[0]) is None:
                what = "the Google Cloud CLI (gcloud)" if command[0] == "gcloud" else "Docker"
                raise SentituneError(
                    f"{command[0]} not found: install {what}, or pass --dry-run to see the commands"
                )
            log.info("$ " + shlex.join(command))
            done = subprocess.run(command)
            if done.returncode != 0:
                raise SentituneError(
                    f"`{shlex.join(command[:3])} …` failed with exit code {done.returncode} (its output is above); "
                    f"if the repository does not exist yet: {result['repository_hint']}"
                )
    return result
