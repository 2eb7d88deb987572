"""Vertex AI Experiments: `cloud submit --experiment` names the Experiment in the job (creating it first when
new), and the training it runs records its settings and final metrics in the run Vertex AI made for it.
Both sides go through Google's own clients (the REST transport of aiplatform_v1, the aiplatform SDK's
ExperimentRun) to the localhost Vertex AI stand-in."""

from __future__ import annotations

import json

import pytest
from helpers import PARENT, RUN_ARGS, WALKTHROUGH_ARGS, cli, cli_error, entries, submit_args, train_tiny

pytest.importorskip("google.cloud.aiplatform")

STORE = f"{PARENT}/metadataStores/default"
SA = ["--service-account", "trainer@my-project.iam.gserviceaccount.com"]
OUT = ["--base-output-dir", "gs://bucket/jobs/n"]


def test_submit_creates_a_new_experiment_and_names_it_in_the_job(vertex, walkthrough_data, capsys):
    args = [*submit_args(*OUT, *SA, "--experiment", "tweets-2026"), *WALKTHROUGH_ARGS]
    code, planned, err = cli(capsys, *args[:-7], "--dry-run", *WALKTHROUGH_ARGS)
    assert code == 0, err
    spec = json.loads(planned)["custom_job"]["customJob"]["jobSpec"]
    assert spec["experiment"] == f"{STORE}/contexts/tweets-2026"
    assert "experimentRun" not in spec  # Vertex AI makes the run and tells the job its name

    code, _, err = cli(capsys, *args[:-7], "--api-endpoint", vertex.url, *WALKTHROUGH_ARGS)
    assert code == 0, err
    lookup, create, job = vertex.requests
    assert lookup == {"path": f"/v1/{STORE}/contexts/tweets-2026", "method": "GET"}
    assert create["path"] == f"/v1/{STORE}/contexts"
    assert create["body"] == {
        "displayName": "tweets-2026",
        "schemaTitle": "system.Experiment",
        "schemaVersion": "0.0.1",
        "metadata": {"experiment_deleted": False},
    }
    assert job["path"] == f"/v1/{PARENT}/customJobs"
    assert job["body"]["jobSpec"]["experiment"] == f"{STORE}/contexts/tweets-2026"

    # the second job into the same experiment finds it and creates nothing
    vertex.requests.clear()
    assert cli(capsys, *args[:-7], "--api-endpoint", vertex.url, *WALKTHROUGH_ARGS)[0] == 0
    assert [r["path"] for r in vertex.requests] == [
        f"/v1/{STORE}/contexts/tweets-2026",
        f"/v1/{PARENT}/customJobs",
    ]


def test_a_project_without_a_metadata_store_gets_its_default_one_first(vertex, walkthrough_data, capsys):
    vertex.metadata_store = False
    args = [
        *submit_args(*OUT, *SA, "--experiment", "tweets", "--api-endpoint", vertex.url),
        *WALKTHROUGH_ARGS,
    ]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    paths = [r["path"] for r in vertex.requests]
    assert paths == [
        f"/v1/{STORE}/contexts/tweets",  # not found
        f"/v1/{STORE}/contexts",  # refused: no store
        f"/v1/{PARENT}/metadataStores",  # the default store, created
        f"/v1/{STORE}/contexts",
        f"/v1/{PARENT}/customJobs",
    ]
    assert f"{STORE}/contexts/tweets" in vertex.contexts


@pytest.mark.parametrize(
    "options, expected",
    [
        ([*SA, "--experiment", "Tweets_2026"],
         "--experiment 'Tweets_2026' is not an experiment name (1-128 of a-z, 0-9 and -, starting with a "
         "letter or digit)"),
        (["--experiment", "tweets"],
         "--experiment needs --service-account: the job records its run as that account"),
    ],
)  # fmt: skip
def test_bad_experiment_options_are_one_line_and_send_nothing(vertex, capsys, options, expected):
    message = cli_error(capsys, *submit_args(*OUT, *options, "--api-endpoint", vertex.url), *WALKTHROUGH_ARGS)
    assert message == f"invalid submit options: {expected}"
    assert vertex.requests == []


def experiment_run(vertex, name: str = "nightly") -> str:
    """The Experiment and its run as Vertex AI leaves them for a job submitted with --experiment."""
    experiment = f"{STORE}/contexts/tweets"
    vertex.contexts[experiment] = {
        "name": experiment,
        "displayName": "tweets",
        "schemaTitle": "system.Experiment",
        "schemaVersion": "0.0.1",
        "metadata": {"experiment_deleted": False},
    }
    run = f"{experiment}-{name}"
    vertex.contexts[run] = {
        "name": run,
        "displayName": name,
        "schemaTitle": "system.ExperimentRun",
        "schemaVersion": "0.0.1",
        "parentContexts": [experiment],
        "metadata": {"_state": "RUNNING", "_params": {}, "_metrics": {}},
    }
    return run


@pytest.fixture
def train_in_job(tmp_path, tiny_model, prepared, monkeypatch, vertex):
    """Train as in a job submitted with --experiment: Vertex AI's variables name the experiment and `run`."""

    def train_with(run: str):
        monkeypatch.setenv("AIP_EXPERIMENT_NAME", f"{STORE}/contexts/tweets")
        monkeypatch.setenv("AIP_EXPERIMENT_RUN_NAME", run)
        monkeypatch.setenv("SENTITUNE_API_ENDPOINT", vertex.url)
        return train_tiny(tmp_path / "run", tiny_model, prepared)

    return train_with


def test_training_in_the_job_records_its_settings_and_final_metrics(train_in_job, tiny_model, vertex, caplog):
    run = experiment_run(vertex)
    job_dir = train_in_job(run)
    metrics = json.loads((job_dir / "metrics.json").read_text())
    settings = json.loads((job_dir / "run_config.json").read_text())["train"]
    recorded = vertex.contexts[run]["metadata"]
    assert recorded["_params"]["learning_rate"] == settings["learning_rate"]
    assert recorded["_params"]["max_steps"] == RUN_ARGS["max_steps"]
    assert recorded["_params"]["model"] == str(tiny_model)
    assert recorded["_params"]["dry_run"] == "false"
    for split in ("val", "test"):
        for name in ("accuracy", "macro_f1", "macro_recall", "loss"):
            assert recorded["_metrics"][f"{split}_{name}"] == pytest.approx(metrics[split][name])
    assert recorded["_metrics"]["training_steps"] == RUN_ARGS["max_steps"]
    assert [r["method"] for r in vertex.requests if r["path"].endswith(run)] == ["GET", "PATCH", "PATCH"]
    assert "recorded settings and metrics in experiment tweets, run nightly" in caplog.text


def test_a_failure_to_record_is_a_warning_and_the_run_is_kept(train_in_job, vertex, caplog):
    run = f"{STORE}/contexts/tweets-gone"  # no such run: the service answers 404
    experiment_run(vertex, "other")
    job_dir = train_in_job(run)
    assert {"metrics.json", "model.safetensors", "run_config.json"} <= entries(job_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("could not record the run in Vertex AI Experiments (") for w in warnings)


def test_outside_a_job_nothing_is_sent(tmp_path, tiny_model, prepared, monkeypatch, vertex):
    monkeypatch.delenv("AIP_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("SENTITUNE_API_ENDPOINT", vertex.url)
    train_tiny(tmp_path / "run", tiny_model, prepared)
    assert vertex.requests == []
