"""Every rule Vertex AI enforces, checked before anything is sent: a job Vertex would refuse, or one that
would fail once its machines are paid for, is one line in a dry run, and the REST stand-in receives
nothing for it."""

from __future__ import annotations

import json

import pytest
from helpers import PROJECT, WALKTHROUGH_ARGS, cli, cli_error, submit_args

pytest.importorskip("google.cloud.aiplatform_v1")

NOWHERE = "nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)"
OUT = ["--base-output-dir", "gs://bucket/jobs/n"]


def refused(capsys, *args) -> str:
    return cli_error(capsys, *args, "--dry-run")


def test_a_batch_that_does_not_divide_by_the_processes_is_refused(capsys):
    message = refused(capsys, *submit_args("--replica-count", "3", *OUT), *WALKTHROUGH_ARGS)
    assert message == (
        "invalid submit options: -- --batch-size 128 does not divide by the job's 3 training processes "
        "(3 replicas x 1 per replica), so every process would refuse to start; use a multiple of 3, e.g. 126, 129"
    )
    code, _, err = cli(capsys, *submit_args("--replica-count", "2", *OUT, "--dry-run"), *WALKTHROUGH_ARGS)
    assert code == 0, err
    default_batch = ["--", "--data", "gs://bucket/d"]  # train's default batch, 32
    message = refused(
        capsys, *submit_args("--replica-count", "3", "--accelerator-count", "2", *OUT), *default_batch
    )
    assert message.startswith(
        "invalid submit options: -- --batch-size 32 does not divide by the job's 6 training "
    )


def test_tuning_batch_sizes_must_divide_by_the_processes(capsys):
    args = ["cloud", "tune", "--project", PROJECT, "--replica-count", "3", *OUT]
    message = refused(capsys, *args, "--", "--data", "gs://bucket/d")
    assert message == (
        "invalid tune options: --batch-size 16, 32, 64 does not divide by the job's 3 training processes "
        "(3 replicas x 1 per replica), so every process would refuse to start; use a multiple of 3, e.g. "
        "15, 18, 30, 33, 63, 66"
    )
    code, _, err = cli(capsys, *args, "--batch-size", "24,48", "--dry-run", "--", "--data", "gs://bucket/d")
    assert code == 0, err


@pytest.mark.parametrize(
    "options, expected",
    [
        (
            [
                "--machine-type",
                "a2-highgpu-1g",
                "--accelerator-type",
                "NVIDIA_TESLA_A100",
                "--accelerator-count",
                "2",
            ],
            "a2-highgpu-1g comes with 1 x NVIDIA_TESLA_A100: pass --accelerator-count 1, or another machine size",
        ),
        (
            [
                "--machine-type",
                "g2-standard-8",
                "--accelerator-type",
                "NVIDIA_L4",
                "--accelerator-count",
                "2",
            ],
            "g2-standard-8 comes with 1 x NVIDIA_L4: pass --accelerator-count 1, or another machine size",
        ),
        (
            ["--accelerator-count", "3"],
            "n1-standard-4 takes 1, 2 or 4 x NVIDIA_TESLA_T4, not 3: pass --accelerator-count 1",
        ),
        (
            ["--machine-type", "g2-standard-8"],
            "g2-standard-8 comes with NVIDIA_L4, not NVIDIA_TESLA_T4; pick a machine for NVIDIA_TESLA_T4 (n1-*)",
        ),
        (
            ["--machine-type", "a2-highgpu-1g", "--accelerator-type", "none"],
            "a2-highgpu-1g comes with 1 x NVIDIA_TESLA_A100: pass --accelerator-type NVIDIA_TESLA_A100 "
            "--accelerator-count 1",
        ),
        (
            [
                "--machine-type",
                "n1-standard-32",
                "--accelerator-type",
                "NVIDIA_TESLA_V100",
                "--accelerator-count",
                "2",
            ],
            "n1-standard-32 takes 4 or 8 x NVIDIA_TESLA_V100, not 2: pass --accelerator-count 4",
        ),
        (
            ["--accelerator-type", "NVIDIA_TESLA_P100"],
            "the default image's PyTorch (pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime) has no kernels for "
            "NVIDIA_TESLA_P100 (compute capability 6.0): choose a GPU of compute capability 7.0 or newer (T4, V100, "
            "L4, A100, H100), or build an image on a CUDA 12.6 base (see the Dockerfile) and pass --image-uri",
        ),
        (
            ["--region", "asia-northeast1", "--accelerator-type", "NVIDIA_TESLA_V100"],
            "NVIDIA_TESLA_V100 is not offered for training in asia-northeast1 (per the catalog of 2026-12-07); "
            "regions that offer it: asia-east1, europe-west4, us-central1, us-east1, us-west1; for one Google added "
            "after 2026-12-07, pass --catalog FILE listing it, or --allow-unlisted",
        ),
    ],
    ids=[
        "a2-count",
        "g2-count",
        "n1-count",
        "g2-other-gpu",
        "a2-without-gpu",
        "n1-v100-tier",
        "p100-image",
        "region",
    ],
)
def test_machines_gpus_counts_and_regions_vertex_refuses(capsys, options, expected):
    message = refused(capsys, "cloud", "submit", "--project", PROJECT, *options, *OUT, *WALKTHROUGH_ARGS)
    assert message == f"invalid submit options: {expected}"


def test_an_image_of_ones_own_may_run_older_gpus(capsys):
    options = [
        "--accelerator-type",
        "NVIDIA_TESLA_P100",
        "--image-uri",
        "europe-docker.pkg.dev/p/r/cu126:1",
        *OUT,
    ]
    code, out, err = cli(capsys, *submit_args(*options, "--dry-run"), *WALKTHROUGH_ARGS)
    assert code == 0, err
    pool = json.loads(out)["custom_job"]["customJob"]["jobSpec"]["workerPoolSpecs"][0]
    assert pool["machineSpec"]["acceleratorType"] == "NVIDIA_TESLA_P100"


def test_every_machine_the_catalog_allows_is_a_machine_spec_the_sdk_accepts():
    from google.cloud.aiplatform_v1 import types

    from sentitune.cloud import catalog

    table = catalog.load()
    combos = [(machine, gpu, count) for machine, (gpu, count) in table["fixed_gpus"].items()]
    for tier, machine in zip(
        table["n1_training"],
        ("n1-standard-8", "n1-standard-16", "n1-standard-32", "n1-standard-64"),
        strict=True,
    ):
        combos += [(machine, gpu, n) for gpu, counts in tier["counts"].items() for n in counts]
    assert len(combos) > 50
    for machine, gpu, count in combos:
        assert machine in table["training_machines"], machine
        found = catalog.gpu_machine_problems(table, machine, gpu, count, serving=False, allow_unlisted=False)
        assert found == [], (machine, gpu, count, found)
        spec = types.MachineSpec(
            machine_type=machine, accelerator_type=types.AcceleratorType[gpu], accelerator_count=count
        )
        assert types.MachineSpec.to_dict(spec)["accelerator_count"] == count
    for gpu in table["gpus"]:
        types.AcceleratorType[gpu]  # every GPU the catalog knows is one the API names
    for region, gpus in (*table["training_regions"].items(), *table["serving_regions"].items()):
        assert region in table["regions"] and set(gpus) <= set(table["gpus"]), region


def test_serving_takes_1_to_n_of_a_fixed_gpu_machines_n_gpus_and_training_all_n():
    from sentitune.cloud import catalog

    table = catalog.load()
    for machine, (gpu, n) in table["fixed_gpus"].items():
        for count in range(1, n + 1):
            serving = catalog.gpu_machine_problems(
                table, machine, gpu, count, serving=True, allow_unlisted=False
            )
            training = catalog.gpu_machine_problems(
                table, machine, gpu, count, serving=False, allow_unlisted=False
            )
            assert serving == [], (machine, count, serving)
            assert (training == []) == (count == n), (machine, count, training)
        for count in (0, n + 1):
            assert catalog.gpu_machine_problems(
                table, machine, gpu, count, serving=True, allow_unlisted=False
            )
    assert catalog.gpu_machine_problems(table, "a2-highgpu-8g", "NVIDIA_TESLA_A100", 9, serving=True,
                                        allow_unlisted=False) == [
        "a2-highgpu-8g serves with 1 to 8 x NVIDIA_TESLA_A100 per replica, not 9: pass --accelerator-count 1 to 8"
    ]  # fmt: skip


def test_grid_search_takes_listed_values_and_log_ranges_start_above_zero(capsys):
    args = ["cloud", "tune", "--project", PROJECT, *OUT]
    message = refused(capsys, *args, "--algorithm", "grid", *WALKTHROUGH_ARGS)
    assert message == (
        "invalid tune options: --algorithm grid takes whole-number ranges and listed values only, and "
        "--learning-rate and --warmup-ratio are ranges of reals; list the values (e.g. --learning-rate "
        "2e-5,5e-5,1e-4), pass 'none', or use --algorithm random"
    )
    code, out, err = cli(
        capsys,
        *args,
        *("--algorithm", "grid", "--learning-rate", "2e-5,5e-5,1e-4", "--warmup-ratio", "none", "--dry-run"),
        *WALKTHROUGH_ARGS,
    )
    assert code == 0, err
    parameters = json.loads(out)["hyperparameter_tuning_job"]["hyperparameterTuningJob"]["studySpec"][
        "parameters"
    ]
    assert parameters[0] == {
        "parameterId": "learning_rate",
        "discreteValueSpec": {"values": [2e-05, 5e-05, 0.0001]},
    }
    message = refused(capsys, *args, "--learning-rate", "0:1e-4", *WALKTHROUGH_ARGS)
    assert message == (
        "invalid tune options: --learning-rate '0:1e-4': a log-scale range must start above 0, e.g. 1e-6:1e-4"
    )


def test_a_job_dir_in_tuning_arguments_is_refused(capsys):
    message = refused(
        capsys,
        "cloud",
        "tune",
        "--project",
        PROJECT,
        "--",
        "--data",
        "gs://bucket/d",
        "--job-dir",
        "gs://bucket/run",
    )
    assert message == (
        "invalid tune options: -- --job-dir gs://bucket/run: every trial would write that one folder; drop it and pass "
        "--base-output-dir gs://… (each trial then writes <base>/<trial id>/model)"
    )


def test_deploying_on_a_gpu_sends_the_gpu_and_the_gpu_image(capsys):
    base = ["cloud", "deploy", "gs://bucket/run", "--project", PROJECT]
    message = refused(capsys, *base, "--machine-type", "g2-standard-8")
    assert message == (
        "invalid deploy options: g2-standard-8 comes with 1 x NVIDIA_L4: pass --accelerator-type NVIDIA_L4 "
        "--accelerator-count 1"
    )
    message = refused(capsys, *base, "--machine-type", "g2-standard-8", "--accelerator-type", "NVIDIA_L4")
    assert message == (
        "invalid deploy options: --backend onnx-int8 runs on the CPU; with --accelerator-type pass --backend torch"
    )
    code, out, err = cli(
        capsys,
        *base,
        *(
            "--machine-type",
            "g2-standard-8",
            "--accelerator-type",
            "NVIDIA_L4",
            "--backend",
            "torch",
            "--dry-run",
        ),
    )
    assert code == 0, err
    plan = json.loads(out)
    spec = plan["deploy_model"]["deployedModel"]["dedicatedResources"]["machineSpec"]
    assert spec == {"machineType": "g2-standard-8", "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}
    image = plan["upload_model"]["model"]["containerSpec"]["imageUri"]
    assert image.endswith(f"/{PROJECT}/sentitune/sentitune:0.1.0"), image  # the CUDA image, not -cpu
    assert "--accelerator=type=nvidia-l4,count=1" in plan["gcloud"][-1]


def test_the_dry_run_says_which_catalog_and_warns_when_it_is_old(capsys, tmp_path):
    code, out, _ = cli(capsys, *submit_args(*OUT, "--dry-run"), *WALKTHROUGH_ARGS)
    assert code == 0
    assert json.loads(out)["checked_against"] == {
        "catalog": "sentitune's catalog of 2026-12-07",
        "date": "2026-12-07",
    }
    from sentitune.cloud.catalog import CATALOG_FILE

    old = json.loads(CATALOG_FILE.read_text())
    old["date"] = "2024-01-01"
    (tmp_path / "catalog.json").write_text(json.dumps(old))
    code, out, _ = cli(
        capsys,
        *submit_args(*OUT, "--catalog", str(tmp_path / "catalog.json"), "--dry-run"),
        *WALKTHROUGH_ARGS,
    )
    checked = json.loads(out)["checked_against"]
    assert checked["catalog"] == str(tmp_path / "catalog.json")
    assert checked["warning"].startswith("the catalog is ") and checked["warning"].endswith(
        "days old; Vertex AI's machines and regions change: check its locations page, or pass --catalog FILE"
    )


def test_a_refused_job_sends_nothing(vertex, walkthrough_data, capsys):
    cli_error(
        capsys, *submit_args("--replica-count", "3", *OUT, "--api-endpoint", vertex.url), *WALKTHROUGH_ARGS
    )
    cli_error(
        capsys,
        *submit_args("--accelerator-type", "NVIDIA_TESLA_P100", *OUT, "--api-endpoint", vertex.url),
        *WALKTHROUGH_ARGS,
    )
    assert vertex.requests == []


def test_a_tensorboard_instance_is_linked_where_vertex_can_stream_to_it(capsys, walkthrough_data):
    account = ["--service-account", "trainer@sentiment-lab-1.iam.gserviceaccount.com"]
    code, out, err = cli(
        capsys, *submit_args("--tensorboard", "77", *account, *OUT, "--dry-run"), *WALKTHROUGH_ARGS
    )
    assert code == 0, err
    spec = json.loads(out)["custom_job"]["customJob"]["jobSpec"]
    assert spec["tensorboard"] == f"projects/{PROJECT}/locations/europe-west4/tensorboards/77"
    elsewhere = f"projects/{PROJECT}/locations/us-central1/tensorboards/77"
    message = refused(capsys, *submit_args("--tensorboard", elsewhere, *account, *OUT), *WALKTHROUGH_ARGS)
    assert message == (
        f"invalid submit options: --tensorboard {elsewhere} is in us-central1 and the job runs in europe-west4: "
        "use an instance in europe-west4, or --region us-central1"
    )
    message = refused(
        capsys, *submit_args("--tensorboard", "77"), *WALKTHROUGH_ARGS, "--job-dir", "gs://bucket/r"
    )
    assert message == (
        "invalid submit options: --tensorboard needs --service-account: Vertex AI uploads the logs as that "
        "account; --tensorboard needs --base-output-dir: the job writes its logs under it first"
    )
    message = refused(capsys, *submit_args("--tensorboard", "tb/77", *account, *OUT), *WALKTHROUGH_ARGS)
    assert message == (
        "invalid submit options: --tensorboard 'tb/77' is not a TensorBoard ID or a resource name "
        "projects/PROJECT/locations/REGION/tensorboards/ID"
    )
