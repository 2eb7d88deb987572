"""`sentitune cloud batch-predict`: the dry run is the requests sent (UploadModel, CreateBatchPredictionJob)
through the real SDK to the localhost Vertex AI stand-in, inputs and outputs on the Cloud Storage
emulator; what Vertex AI would refuse or what would mix results is one line, with nothing sent."""

from __future__ import annotations

import json

import pytest
from helpers import BUCKET, PARENT, PROJECT, REGION, cli, cli_error

from sentitune import __version__

pytest.importorskip("google.cloud.aiplatform_v1")

INPUT = f"gs://{BUCKET}/posts/day.jsonl"
OUTPUT = f"gs://{BUCKET}/predictions"


def batch_args(run: str | None, *extra: str) -> list[str]:
    return [
        "cloud",
        "batch-predict",
        *([run] if run else []),
        "--project",
        PROJECT,
        "--region",
        REGION,
        *extra,
    ]


@pytest.fixture
def posts_on_gs(gcs_env, gs):
    gs.pipe(f"{BUCKET}/posts/day.jsonl", b'"what a great day"\n{"text": "worst service ever"}\n')
    return INPUT


def test_the_dry_run_names_inputs_outputs_machines_and_the_serving_image(capsys):
    code, out, err = cli(
        capsys,
        *batch_args("gs://bucket/runs/r1", "--input-uri", "gs://bucket/in/a.jsonl", "gs://bucket/in/b.jsonl",
                    "--output-uri-prefix", "gs://bucket/out", "--max-replica-count", "4", "--dry-run"),
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    model = plan["upload_model"]["model"]
    assert model["artifactUri"] == "gs://bucket/runs/r1"
    assert (
        model["containerSpec"]["imageUri"]
        == f"{REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune-cpu:{__version__}"
    )
    assert model["containerSpec"]["args"] == ["serve", "--backend", "onnx-int8"]
    job = plan["create_batch_prediction_job"]["batchPredictionJob"]
    assert job["inputConfig"] == {
        "instancesFormat": "jsonl",
        "gcsSource": {"uris": ["gs://bucket/in/a.jsonl", "gs://bucket/in/b.jsonl"]},
    }
    assert job["outputConfig"] == {
        "predictionsFormat": "jsonl",
        "gcsDestination": {"outputUriPrefix": "gs://bucket/out"},
    }
    assert job["dedicatedResources"] == {
        "machineSpec": {"machineType": "n1-standard-2"},
        "startingReplicaCount": 1,
        "maxReplicaCount": 4,
    }
    assert job["manualBatchTuningParameters"] == {"batchSize": 64}
    assert job["model"] == "<the model UploadModel returns>"
    assert plan["checked_against"]["date"]


def test_batch_predict_sends_exactly_the_dry_run_requests(gs_run, posts_on_gs, vertex, capsys):
    args = batch_args(gs_run, "--input-uri", posts_on_gs, "--output-uri-prefix", OUTPUT)
    _, planned, _ = cli(capsys, *args, "--dry-run")
    plan = json.loads(planned)
    code, out, err = cli(capsys, *args, "--api-endpoint", vertex.url)
    assert code == 0, err
    upload, create = vertex.requests
    assert upload["path"] == f"/v1/{PARENT}/models:upload"
    assert upload["body"] == {"model": plan["upload_model"]["model"]}
    assert create["path"] == f"/v1/{PARENT}/batchPredictionJobs"
    expected = plan["create_batch_prediction_job"]["batchPredictionJob"]
    expected["model"] = f"{PARENT}/models/111"
    assert create["body"] == expected
    assert out.splitlines() == [
        f"submitted {PARENT}/batchPredictionJobs/666 (JOB_STATE_PENDING), model {PARENT}/models/111",
        f"console: https://console.cloud.google.com/ai/platform/locations/{REGION}/batch-predictions/666?project={PROJECT}",
        f"predictions will be under {OUTPUT}",
    ]


def test_a_registered_model_is_not_uploaded_again(posts_on_gs, vertex, capsys):
    args = batch_args(
        None, "--registered-model", "987", "--input-uri", posts_on_gs, "--output-uri-prefix", OUTPUT
    )
    code, _, err = cli(capsys, *args, "--api-endpoint", vertex.url)
    assert code == 0, err
    (create,) = vertex.requests
    assert create["body"]["model"] == f"{PARENT}/models/987"


def test_earlier_predictions_or_a_missing_input_stop_the_job_before_anything_is_sent(
    gs_run, posts_on_gs, gs, vertex, capsys
):  # fmt: skip
    gs.pipe(f"{BUCKET}/predictions/prediction-sentitune-run-2026_12_01/predictions_00001", b"{}\n")
    args = batch_args(
        gs_run, "--input-uri", posts_on_gs, "--output-uri-prefix", OUTPUT, "--api-endpoint", vertex.url
    )
    message = cli_error(capsys, *args)
    assert message == (
        f"{OUTPUT} already holds predictions (prediction-sentitune-run-2026_12_01); pass --overwrite to write "
        "another job's beside them, or choose another --output-uri-prefix; nothing was sent"
    )
    missing = batch_args(
        gs_run, "--input-uri", f"gs://{BUCKET}/posts/nope.jsonl", "--output-uri-prefix", f"gs://{BUCKET}/new"
    )
    message = cli_error(capsys, *missing, "--api-endpoint", vertex.url)
    assert message == f"--input-uri gs://{BUCKET}/posts/nope.jsonl does not exist; nothing was sent"
    assert vertex.requests == []
    code, _, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert [r["path"] for r in vertex.requests] == [
        f"/v1/{PARENT}/models:upload",
        f"/v1/{PARENT}/batchPredictionJobs",
    ]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--input-uri", "posts.jsonl", "--output-uri-prefix", "gs://bucket/o"],
         "--input-uri posts.jsonl is not on Cloud Storage; the job reads gs://… only"),
        (["--input-uri", "gs://bucket/posts.parquet", "--output-uri-prefix", "gs://bucket/o"],
         "--input-uri gs://bucket/posts.parquet is not JSONL or CSV by its name; rename it or pass --instances-format"),
        (["--input-uri", "gs://bucket/a.jsonl", "gs://bucket/b.csv", "--output-uri-prefix", "gs://bucket/o"],
         "the inputs mix JSONL and CSV; one job reads one format: send them as two jobs"),
        (["--input-uri", "gs://bucket/a.jsonl", "--output-uri-prefix", "out/"],
         "--output-uri-prefix out/ is not on Cloud Storage; pass gs://…"),
        (["--input-uri", "gs://bucket/a.csv", "--output-uri-prefix", "gs://bucket/o", "--starting-replica-count", "5", "--max-replica-count", "2"],
         "--max-replica-count 2 is below --starting-replica-count 5"),
        (["--input-uri", "gs://bucket/a.csv", "--output-uri-prefix", "gs://bucket/o", "--machine-type", "g2-standard-8", "--accelerator-type", "NVIDIA_L4"],
         "--backend onnx-int8 runs on the CPU; with --accelerator-type pass --backend torch"),
        (["--output-uri-prefix", "gs://bucket/o"], "--input-uri is required: the JSONL or CSV files on gs:// to score"),
        (["--input-uri", "gs://bucket/a.csv", "--output-uri-prefix", "gs://bucket/o", "--registered-model", "12"],
         "pass RUN_DIR or --registered-model, not both"),
    ],
)  # fmt: skip
def test_what_vertex_would_refuse_is_one_line_before_anything_is_sent(capsys, extra, expected):
    message = cli_error(capsys, *batch_args("gs://bucket/runs/r1", *extra, "--dry-run"))
    assert message == f"invalid batch-predict options: {expected}"


def test_the_cost_estimate_counts_the_posts_and_uses_evaluates_measured_speed(
    capsys,
    caplog,
    gs,
    posts_on_gs,
    run_copy,
    prepared,
    tmp_path,
):
    measured = tmp_path / "measured"
    assert (
        cli(capsys, "evaluate", run_copy, "--data", prepared / "test.csv", "--output-dir", measured)[0] == 0
    )
    speed = json.loads((measured / "metrics.json").read_text())["examples_per_s"]
    gs.pipe(f"{BUCKET}/posts/day.csv", b"text\ngood\n\nbad\nfine\n")  # a header, three posts, a blank line
    expected = {INPUT: 2, f"gs://{BUCKET}/posts/day.csv": 3}
    for uri, posts in expected.items():
        args = batch_args("gs://bucket/runs/r1", "--input-uri", uri, "--output-uri-prefix", OUTPUT,
                          "--throughput-from", str(measured), "--max-replica-count", "4", "--dry-run")  # fmt: skip
        code, out, err = cli(capsys, *args)
        assert code == 0, err
        cost = json.loads(out)["cost"]
        assert cost["machine_type"] == "n1-standard-2" and cost["usd_per_hour"] == pytest.approx(0.1203)
        assert cost["posts"] == posts
        assert cost["node_hours"] == pytest.approx(posts / speed / 3600, abs=1e-3)
        assert (
            f"cost: $0.12/hour per replica (sentitune's table of 2026-11-27); this job ≈ {cost['node_hours']:.2f} node hours"
            in caplog.text
        )
    # ten million posts, given rather than counted: node hours at the measured speed, a quarter of them at
    # four replicas, billed at the machine's rate
    code, out, err = cli(capsys, *args[:-1], "--posts", "10000000", "--dry-run")
    cost = json.loads(out)["cost"]
    hours = 10_000_000 / speed / 3600
    assert cost["node_hours"] == pytest.approx(hours, abs=1e-3)
    assert cost["hours_at_max_replicas"] == pytest.approx(hours / 4, abs=1e-3)
    assert cost["estimated_usd"] == pytest.approx(hours * 0.1203, abs=0.01)
    # a run folder is not a measurement of serving speed; a missing input cannot be counted
    message = cli_error(capsys, *args[:-3], "--throughput-from", str(run_copy), "--dry-run")
    assert message == (
        f"--throughput-from {run_copy}: its metrics.json has no examples_per_s; pass the output folder of "
        "`sentitune evaluate`, not a run folder"
    )
    missing = f"gs://{BUCKET}/posts/none.jsonl"
    message = cli_error(capsys, *batch_args("gs://bucket/runs/r1", "--input-uri", missing, "--output-uri-prefix",
                        OUTPUT, "--throughput-from", str(measured), "--dry-run"))  # fmt: skip
    assert message == f"--input-uri {missing} does not exist; pass --posts N or fix the name"
