"""`prepare` reading Label Studio's exports, written here as Label Studio writes them (JSON with tasks,
annotations and predictions; JSON-MIN; CSV with the columns sorted and non-numbers quoted): people's
labels over pre-annotations, skipped tasks and cancelled annotations left out and counted, posts
labelled twice, an unknown label, people's labels beside VADER's; and the Label Studio round trip:
select -> annotate -> prepare -> train."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli, cli_error, read_splits, train_tiny

from sentitune.config import SelectConfig
from sentitune.labelstudio import export_flavour, read_export
from sentitune.select import select

CLASSES = ("negative", "neutral", "positive")


def result(label: str, origin: str = "manual") -> list[dict]:
    """A `choices` result of the labelling config select writes."""
    return [
        {
            "id": f"r-{label}",
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "origin": origin,
            "value": {"choices": [label]},
        }
    ]


def annotation(number: int, label: str | None, minute: int, cancelled: bool = False) -> dict:
    stamp = f"2026-12-01T10:{minute:02d}:00.000000Z"
    return {
        "id": number,
        "completed_by": 1,
        "result": [] if label is None else result(label),
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": stamp,
        "updated_at": stamp,
        "lead_time": 4.2,
        "task": number,
    }


def json_export(
    texts: list[str], labels: list[str | None], data: list[dict] | None = None, **extra: list[dict]
) -> list[dict]:
    """A JSON export: each task with the model's pre-annotation and, where a label is given, one annotation
    (None: the task was never annotated); `data`: the tasks' data fields as imported (default: the text
    alone); `extra`: more annotations by task index."""
    tasks = []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        annotations = [] if label is None else [annotation(i + 1, label, i % 60)]
        annotations += extra.get(str(i), [])
        tasks.append(
            {
                "id": i + 1,
                "data": data[i] if data else {"text": text},
                "annotations": annotations,
                "predictions": [
                    {"model_version": "sentitune 0.1.0: run", "score": 0.41, "result": result("neutral")}
                ],
                "project": 1,
                "created_at": "2026-12-01T09:00:00.000000Z",
                "updated_at": "2026-12-01T10:00:00.000000Z",
                "inner_id": i + 1,
                "total_annotations": len(annotations),
                "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
                "total_predictions": 1,
            }
        )
    return tasks


def flat_records(tasks: list[dict]) -> list[dict]:
    """JSON-MIN as Label Studio's converter makes it: per task, each annotation that was not cancelled
    (the newest first) as the task's data + the control's choice + the annotation's fields; a task with
    no annotation as its data alone; a task whose annotations were all cancelled not at all."""
    records = []
    for task in tasks:
        if not task["annotations"]:
            records.append({**task["data"], "id": task["id"]})
            continue
        kept = [a for a in task["annotations"] if not a["was_cancelled"]]
        for a in sorted(kept, key=lambda a: a["created_at"], reverse=True):
            record = {**task["data"], "id": task["id"]}
            if a["result"]:
                record["sentiment"] = a["result"][0]["value"]["choices"][0]
            record.update(
                annotator=a["completed_by"],
                annotation_id=a["id"],
                created_at=a["created_at"],
                updated_at=a["updated_at"],
                lead_time=a["lead_time"],
            )
            records.append(record)
    return records


def write_export(tasks: list[dict], flavour: str, path: Path) -> Path:
    if flavour == "JSON":
        path.write_text(json.dumps(tasks, indent=2))
    elif flavour == "JSON-MIN":
        path.write_text(json.dumps(flat_records(tasks), indent=2))
    else:  # CSV: the union of the fields, sorted; strings quoted (csv.QUOTE_NONNUMERIC), as Label Studio does
        records = flat_records(tasks)
        fields = sorted(
            {"annotator", "annotation_id", "created_at", "updated_at", "lead_time"}.union(*records)
        )
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_NONNUMERIC)
            writer.writeheader()
            writer.writerows(records)
    return path


SUFFIX = {"JSON": ".json", "JSON-MIN": ".json", "CSV": ".csv"}


@pytest.fixture()
def posts(tweets) -> pd.DataFrame:
    return tweets.head(60).reset_index(drop=True)


@pytest.mark.parametrize("flavour", ["JSON", "JSON-MIN", "CSV"])
def test_every_export_flavour_gives_peoples_labels_not_the_pre_annotation(flavour, posts, tmp_path, capsys):
    labels = posts["label"].tolist()
    labels[:5] = [None] * 5  # never annotated: only the model's pre-annotation
    tasks = json_export(posts["text"].tolist(), labels)
    path = write_export(tasks, flavour, tmp_path / f"export{SUFFIX[flavour]}")
    assert export_flavour(str(path)) == flavour

    code, out, err = cli(capsys, "prepare", path, "--output-dir", tmp_path / "out", "--val-fraction", "0.2")
    assert code == 0, err

    got = read_splits(tmp_path / "out").set_index("text")["label"]
    assert got.to_dict() == dict(zip(posts["text"][5:], posts["label"][5:], strict=True))
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    (stats,) = report["label_studio"]
    assert (stats["format"], stats["labelled"], stats["skipped"], stats["without_a_label"]) == (
        flavour,
        55,
        0,
        5,
    )
    assert "label_source" not in pd.read_csv(tmp_path / "out" / "train.csv").columns  # all people's labels
    assert (
        f"Label Studio {flavour} export, 55 labels by people; left out 0 skipped or cancelled, 5 without"
        in out
    )


def test_skipped_tasks_and_cancelled_annotations_are_left_out_and_counted(posts, tmp_path, capsys):
    texts, labels = posts["text"].tolist(), posts["label"].tolist()
    skipped = {str(i): [annotation(100 + i, None, 59, cancelled=True)] for i in range(3)}
    labels[:3] = [None] * 3  # tasks 0-2: skipped, with nothing else
    # task 3: annotated, then someone else cancelled it: the annotation stands
    skipped["3"] = [annotation(200, None, 59, cancelled=True)]
    path = write_export(json_export(texts, labels, **skipped), "JSON", tmp_path / "export.json")

    export = read_export(str(path))
    assert (export.skipped, export.unlabelled, len(export.rows)) == (3, 0, 57)
    assert texts[3] in set(export.rows["text"]) and not set(texts[:3]) & set(export.rows["text"])
    code, out, err = cli(capsys, "prepare", path, "--output-dir", tmp_path / "out", "--val-fraction", "0.2")
    assert code == 0, err
    assert "57 labels by people; left out 3 skipped or cancelled, 0 without a label" in out


@pytest.mark.parametrize("policy", ["later", "drop"])
def test_a_post_labelled_twice_differently_is_reported_and_the_later_label_wins_unless_dropped(
    policy, posts, tmp_path, capsys
):
    texts, labels = posts["text"].tolist(), posts["label"].tolist()
    earlier = posts.assign(label=labels)
    flipped = {"negative": "positive", "positive": "negative", "neutral": "negative"}
    earlier.loc[:3, "label"] = earlier.loc[:3, "label"].map(flipped)  # labelled otherwise in round 1
    earlier.to_csv(tmp_path / "round1.csv", index=False)
    # the same post annotated twice in one export: the later annotation (by time, not order) counts
    twice = {"10": [annotation(300, flipped[labels[10]], 0)]}
    path = write_export(json_export(texts, labels, **twice), "JSON", tmp_path / "round2.json")
    flags = [] if policy == "later" else ["--conflicts", "drop"]

    code, out, err = cli(
        capsys, "prepare", tmp_path / "round1.csv", path, "--output-dir", tmp_path / "out", "--val-fraction", "0.2",
        *flags,
    )  # fmt: skip
    assert code == 0, err

    got = read_splits(tmp_path / "out").set_index("text")["label"]
    conflicted = [*texts[:4], texts[10]]
    if policy == "later":
        assert got.to_dict() == dict(zip(texts, labels, strict=True))  # round 2's labels, the later ones
    else:
        assert not set(conflicted) & set(got.index) and len(got) == 55
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["conflicts"] == {"posts": 5, "rows": 11, "policy": policy, "file": "conflicts.csv"}
    listed = pd.read_csv(tmp_path / "out" / "conflicts.csv", keep_default_na=False).set_index("text")
    assert sorted(listed.index) == sorted(conflicted)
    assert listed.loc[texts[0], "labels"] == f"{flipped[labels[0]]} > {labels[0]}"
    # round 1's label, then round 2's two annotations by time
    assert listed.loc[texts[10], "labels"] == f"{labels[10]} > {flipped[labels[10]]} > {labels[10]}"
    assert listed.loc[texts[0], "kept"] == (labels[0] if policy == "later" else "")
    kept = "kept the later label" if policy == "later" else "dropped them"
    assert f"5 posts were labelled differently by people; {kept}" in out


def test_an_unknown_label_is_one_line_error_naming_the_labels(posts, tmp_path, capsys):
    labels = posts["label"].tolist()
    labels[7] = "sarcastic"
    path = write_export(json_export(posts["text"].tolist(), labels), "JSON-MIN", tmp_path / "export.json")
    message = cli_error(capsys, "prepare", path, "--output-dir", tmp_path / "out")
    assert message.startswith(f"{path}: label value 'sarcastic' maps to no class (known: ")
    assert "--labels negative,neutral,positive,sarcastic" in message or "--label-map" in message
    assert not (tmp_path / "out").exists()
    # beside VADER's scores, people's labels are class names: the same mistake, said for that case
    message = cli_error(capsys, "prepare", path, "--label-with", "vader", "--output-dir", tmp_path / "out")
    assert message == (
        f"{path}: unknown label 'sarcastic' (the labels are negative, neutral, positive); relabel those posts "
        "or name the classes with --labels"
    )


def test_peoples_labels_beside_vaders_are_marked_and_win(posts, tweets, tmp_path, capsys):
    people = posts.head(30)
    unlabelled = tweets[["text"]].iloc[20:200]  # holds 10 of the posts people labelled
    unlabelled.to_csv(tmp_path / "posts.csv", index=False)
    path = write_export(
        json_export(people["text"].tolist(), people["label"].tolist()), "JSON", tmp_path / "e.json"
    )
    code, _, err = cli(
        capsys,
        "prepare",
        tmp_path / "posts.csv",
        path,
        "--label-with",
        "vader",
        "--output-dir",
        tmp_path / "out",
    )
    assert code == 0, err
    got = read_splits(tmp_path / "out").set_index("text")
    assert len(got) == 180 + 20
    assert (got.loc[people["text"], "label_source"] == "human").all()
    assert (got.loc[people["text"], "label"] == people["label"].to_numpy()).all()
    assert got.loc[people["text"], "score"].isna().all() and got["score"].notna().sum() == 170
    assert (got["label_source"] == "vader").sum() == 170
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["label_sources"]["human"] == 30 and report["label_sources"]["vader"] == 170
    assert report["conflicts"]["posts"] == 0  # VADER's label is overridden, not in conflict


def test_round_trip_label_studio_select_annotate_prepare_train(
    trained_run, tiny_model, tweets, tmp_path, capsys
):
    tweets[["text"]].to_csv(tmp_path / "pool.csv", index=False)
    gold = dict(zip(tweets["text"], tweets["label"], strict=True))
    code, _, err = cli(
        capsys, "select", trained_run, "--pool", tmp_path / "pool.csv", "--n", "90", "--format", "label-studio",
        "--output-dir", tmp_path / "round1",
    )  # fmt: skip
    assert code == 0, err
    imported = json.loads((tmp_path / "round1" / "tasks.json").read_text())
    # what Label Studio exports after people annotated the imported tasks (one skipped)
    exported = json_export([t["data"]["text"] for t in imported], [gold[t["data"]["text"]] for t in imported])
    exported[0]["annotations"] = [annotation(999, None, 1, cancelled=True)]
    path = write_export(exported, "JSON", tmp_path / "project-1-at-2026-12-07.json")
    code, out, err = cli(capsys, "prepare", path, "--output-dir", tmp_path / "data", "--val-fraction", "0.2")
    assert code == 0, err
    rows = read_splits(tmp_path / "data").set_index("text")["label"]
    assert rows.to_dict() == {t["data"]["text"]: gold[t["data"]["text"]] for t in imported[1:]}
    run = train_tiny(tmp_path / "run", tiny_model, tmp_path / "data", max_steps=2)
    assert "macro_recall" in json.loads((run / "metrics.json").read_text())["val"]
    # the next round leaves out what people have seen
    code, _, err = cli(
        capsys, "select", run, "--pool", tmp_path / "pool.csv", "--labelled", path, "--n", "10",
        "--output-dir", tmp_path / "round2",
    )  # fmt: skip
    assert code == 0, err
    again = set(pd.read_csv(tmp_path / "round2" / "selected.csv")["text"])
    assert not again & {t["data"]["text"] for t in imported[1:]}


@pytest.fixture(scope="module")
def imported(trained_run, tweets, tmp_path_factory) -> list[dict]:
    """The tasks select wrote for Label Studio: each post with where it came from in its data fields."""
    folder = tmp_path_factory.mktemp("selected")
    tweets[["text"]].to_csv(folder / "pool.csv", index=False)
    # equal shares: the tiny run predicts one class for most posts, and the tasks should hold all three
    select(SelectConfig(run_dir=str(trained_run), pool=[str(folder / "pool.csv")], n=60, format="label-studio",
                        class_shares="equal", output_dir=str(folder / "round1")))  # fmt: skip
    return json.loads((folder / "round1" / "tasks.json").read_text())


@pytest.mark.parametrize("flavour", ["JSON", "JSON-MIN", "CSV"])
def test_every_export_flavour_of_selected_tasks_gives_the_rounds_agreement_with_people(
    flavour, imported, tmp_path, capsys
):
    other = {"negative": "positive", "neutral": "negative", "positive": "neutral"}
    models = [t["data"]["model_label"] for t in imported]
    labels = [m if i % 3 else other[m] for i, m in enumerate(models)]  # agreeing with the model, or not
    labels[1] = labels[2] = None  # 1: never annotated; 2: skipped
    skipped = {"2": [annotation(500, None, 59, cancelled=True)]}
    texts = [t["data"]["text"] for t in imported]
    path = write_export(
        json_export(texts, labels, data=[t["data"] for t in imported], **skipped),
        flavour,
        tmp_path / f"export{SUFFIX[flavour]}",
    )
    code, _, err = cli(capsys, "prepare", path, "--output-dir", tmp_path / "out", "--val-fraction", "0.2")
    assert code == 0, err

    # what the file holds: each label a person gave (not cancelled) beside the model's label
    if flavour == "JSON":
        pairs = [(a["result"][0]["value"]["choices"][0], t["data"]["model_label"])
                 for t in json.loads(path.read_text()) for a in t["annotations"]
                 if a["result"] and not a["was_cancelled"]]  # fmt: skip
    else:
        with open(path, encoding="utf-8") as f:
            records = json.load(f) if flavour == "JSON-MIN" else list(csv.DictReader(f))
        pairs = [(r["sentiment"], r["model_label"]) for r in records if r.get("sentiment")]
    agreed = sum(person == model for person, model in pairs)
    assert len(pairs) == 58 and 0 < agreed < len(pairs)
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    (entry,) = report["labelling_rounds"]
    carried = imported[0]["data"]
    assert entry["run"] == carried["model_run"] == "run"
    assert (entry["labels_by_people"], entry["compared_with_the_model"], entry["agreed"]) == (
        len(pairs),
        len(pairs),
        agreed,
    )
    assert entry["agreement"] == round(agreed / len(pairs), 4)
    assert sum(c["agreed"] for c in entry["per_class"].values()) == agreed
    assert entry["val_macro_recall"] == carried["model_val_recall"]
    assert entry["people_labelled_training_posts"] == carried["model_human_train"]
    assert "inconsistent" not in entry
