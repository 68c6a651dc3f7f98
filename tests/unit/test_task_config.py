"""The bundled example tasks load, their data fits them, and task files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.processors.data import read_examples
from loopline.processors.training import student_architecture, textcat_model
from loopline.schemas import ConfigError, TaskConfig, load_task
from loopline.schemas.task import StudentConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASKS = ["banking77", "wnut17", "snips"]


@pytest.mark.parametrize("name", TASKS)
def test_example_task_and_its_data_load(name):
    task = load_task(EXAMPLES / name / "task.yml")
    assert task.name == name
    assert task.topics.prefix == f"loopline.{name}."
    descriptions = list(task.labels.values())
    assert all(d.strip() for d in descriptions)
    assert len(set(descriptions)) == len(descriptions), "descriptions must tell labels apart"
    data_files = sorted((EXAMPLES / name).glob("*.jsonl"))
    assert {p.stem for p in data_files} >= {"train", "test"}
    for path in data_files:
        examples = read_examples(path, task)
        assert all(eg.source == "human" for eg in examples)
        used = {label for eg in examples for label in eg.labels}
        used |= {span.label for eg in examples for span in eg.spans}
        assert used == set(task.labels), f"{path.name} should use every label of the task"


def test_banking77_declares_all_77_intents_and_routes_at_0_9():
    task = load_task(EXAMPLES / "banking77")
    assert (task.kind, len(task.labels)) == ("textcat", 77)
    assert task.routing.accept_threshold == 0.9
    assert task.max_text_chars == 2000


def test_banking77_splits_are_disjoint():
    task = load_task(EXAMPLES / "banking77")
    texts = {
        split: {eg.text for eg in read_examples(EXAMPLES / "banking77" / f"{split}.jsonl", task)}
        for split in ("train", "dev")
    }
    assert not texts["train"] & texts["dev"]


def test_wnut17_is_ner_with_the_six_types():
    task = load_task(EXAMPLES / "wnut17")
    assert task.kind == "ner"
    assert set(task.labels) == {
        "person",
        "location",
        "group",
        "corporation",
        "product",
        "creative-work",
    }
    assert student_architecture(task) == "spancat"


def minimal(**changes) -> dict:
    return {
        "name": "t",
        "kind": "textcat",
        "labels": {"a": "A.", "b": "B."},
        "topics": {"prefix": "t."},
        **changes,
    }


def test_ner_defaults_to_spancat_and_refuses_text_classifiers():
    ner = TaskConfig.model_validate(minimal(kind="ner"))
    assert student_architecture(ner) == "spancat"
    ner_bow = TaskConfig.model_validate(minimal(kind="ner", student={"architecture": "bow"}))
    with pytest.raises(ConfigError, match="use spancat for ner"):
        student_architecture(ner_bow)


def test_textcat_refuses_spancat():
    task = TaskConfig.model_validate(minimal(student={"architecture": "spancat"}))
    with pytest.raises(ConfigError, match="not a text classifier"):
        textcat_model(student_architecture(task), exclusive=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "must be a YAML mapping"),
        ("name: t\nkind: textcat\nlabels: {a: A}\ntopics: {prefix: t.}\n", "at least 2 labels"),
        ("name: t\nkind: sentiment\nlabels: {a: A, b: B}\ntopics: {prefix: t.}\n", "kind"),
    ],
)
def test_bad_task_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "task.yml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_task(path)


def test_a_cascade_names_two_or_more_different_steps():
    cascade = StudentConfig(architecture="cascade", steps=["bow", "encoder"])
    assert cascade.steps == ["bow", "encoder"] and cascade.cascade_tolerance == 0.02
    for bad in (
        {"architecture": "cascade", "steps": ["bow"]},
        {"architecture": "cascade", "steps": ["bow", "bow"]},
        {"architecture": "bow", "steps": ["bow", "encoder"]},
        {"architecture": "cascade", "steps": ["bow", "spancat"]},
    ):
        with pytest.raises(ValueError):
            StudentConfig(**bad)
