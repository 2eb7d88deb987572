"""The labelled data a training reads: the prepared folder read once into one value (`read_prepared`), or the
walkthrough's three files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import cli_error, train_tiny

from sentitune import LABELS, splits, storage
from sentitune.config import TrainConfig
from sentitune.errors import SentituneError
from sentitune.layout import LABELS_FILE, SPLIT_FILES, SPLIT_MARKER
from sentitune.splits import Prepared, read_prepared
from sentitune.train import train

STORAGE_READS = {f.__code__ for f in (storage.exists, storage.listdir_names, storage.open_input)}
RECORDS = {SPLIT_MARKER, LABELS_FILE}  # what prepare recorded beside the splits


def folder_reads(data: Path, run) -> tuple[list[str], list[tuple[str, str]]]:
    """Run `run()` and watch every call. Returns the calls into splits.py from other modules that listed a
    folder or opened a file through storage themselves (by function name; the split files are read
    through tables.py), and the listings of `data` or reads of its records by any other module, as
    (module file, path)."""
    entries, elsewhere = [], []
    entry = None  # [frame, name, has read] of the call into splits.py under way

    def watch(frame, event, arg):
        nonlocal entry
        code = frame.f_code
        if event == "return" and entry and frame is entry[0]:
            entry = None
        if event != "call":
            return
        caller = frame.f_back.f_code.co_filename if frame.f_back else ""
        if code.co_filename == splits.__file__ and entry is None and caller != splits.__file__:
            entry = [frame, code.co_name, False]
        elif code in STORAGE_READS:
            if caller == splits.__file__:
                if entry and not entry[2]:
                    entry[2] = True
                    entries.append(entry[1])
                return
            path = str(frame.f_locals["path"]).rstrip("/")
            if path == str(data) or (path.startswith(f"{data}/") and Path(path).name in RECORDS):
                elsewhere.append((Path(caller).name, path))

    sys.setprofile(watch)
    try:
        run()
    finally:
        sys.setprofile(None)
    return entries, elsewhere


@pytest.mark.parametrize("soft_targets", [0.0, 0.1])  # soft targets need the folder's score boundaries
def test_a_training_reads_the_prepared_folder_once(tmp_path, tiny_model, prepared, soft_targets):
    entries, elsewhere = folder_reads(
        prepared,
        lambda: train_tiny(
            tmp_path / "run",
            tiny_model,
            prepared,
            max_steps=2,
            train_eval_examples=0,
            soft_targets=soft_targets,
        ),  # fmt: skip
    )
    assert len(entries) == 1, f"splits.py read {prepared} in {len(entries)} calls: {entries}"
    assert elsewhere == [], f"read outside splits.py: {elsewhere}"
    # what was read once reached the card and the report
    card = (tmp_path / "run" / "README.md").read_text()
    assert "Labels: score scores mapped to classes by" in card
    assert "data-figure='rows'" in (tmp_path / "run" / "report.html").read_text()


def test_the_walkthrough_files_are_read_without_a_folder(tmp_path, tiny_model, prepared):
    files = {"training_file": "train.csv", "validation_file": "eval.csv", "testing_file": "test.csv"}
    cfg = TrainConfig(**{k: str(prepared / v) for k, v in files.items()}, job_dir=str(tmp_path / "run"),
                      model=str(tiny_model), max_steps=2, batch_size=16, train_eval_examples=0)  # fmt: skip
    walkthrough = read_prepared(cfg)
    assert walkthrough == Prepared({"train": cfg.training_file, "val": cfg.validation_file,
                                    "test": cfg.testing_file}, LABELS)  # fmt: skip
    assert walkthrough.folder is None and walkthrough.label_source is None
    entries, elsewhere = folder_reads(prepared, lambda: train(cfg))
    assert (entries, elsewhere) == ([], [])
    assert "Labels: the label column of the training file." in (tmp_path / "run" / "README.md").read_text()
    assert "data-figure='rows'" not in (tmp_path / "run" / "report.html").read_text()  # no prepare report


def test_a_prepared_folder_is_one_value(tmp_path, prepared):
    found = read_prepared(TrainConfig(data=str(prepared)))
    report = json.loads((prepared / SPLIT_MARKER).read_text())
    assert found.files == {split: str(prepared / f"{stem}.csv") for split, stem in SPLIT_FILES.items()}
    assert (found.folder, found.format, found.report) == (str(prepared), "csv", report)
    assert found.classes == tuple(json.loads((prepared / LABELS_FILE).read_text())["labels"]) == LABELS
    assert found.label_source == report["labels"]["source"] == "score"
    assert found.score_boundaries == tuple(
        json.loads((prepared / LABELS_FILE).read_text())["score_boundaries"]
    )
    # the format prepare recorded wins over split files of another format beside them
    data = Path(shutil.copytree(prepared, tmp_path / "data"))
    for stem in SPLIT_FILES.values():
        (data / f"{stem}.jsonl").write_text('{"text": "elsewhere", "label": "neutral"}\n')
    (data / "train.csv").unlink()
    mixed = read_prepared(TrainConfig(data=str(data)))
    assert mixed.files == {"train": str(data / "train.jsonl"), "val": str(data / "eval.csv"),
                           "test": str(data / "test.csv")}  # fmt: skip


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            SPLIT_MARKER,
            "{not json",
            "{data}/prepare_report.json is not prepare's report; run `sentitune prepare` again",
        ),
        (
            SPLIT_MARKER,
            "[1, 2]",
            "{data}/prepare_report.json is not prepare's report; run `sentitune prepare` again",
        ),
        (
            LABELS_FILE,
            '{"classes": []}',
            "{data}/labels.json is not a label list; run `sentitune prepare` again",
        ),
    ],
)
def test_an_edited_record_of_the_folder_is_refused_before_training(
    tmp_path, capsys, tiny_model, prepared, name, content, message
):
    data = Path(shutil.copytree(prepared, tmp_path / "data"))
    (data / name).write_text(content)
    job = tmp_path / "job"
    given = cli_error(capsys, "train", "--data", data, "--model", tiny_model, "--job-dir", job)
    assert given == message.format(data=data)
    assert not job.exists()
    with pytest.raises(SentituneError, match="run `sentitune prepare` again"):
        read_prepared(TrainConfig(data=str(data)))
