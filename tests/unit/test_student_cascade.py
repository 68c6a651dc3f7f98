"""A bow -> encoder cascade on SNIPS: one model directory, one Predictor, routing by step."""

from __future__ import annotations

import json

import pytest

from loopline.processors.data import read_examples
from loopline.processors.students import StudentCascade, load_student
from loopline.schemas import ModelError, load_task
from tests.fixtures.models import EXAMPLES


@pytest.fixture(scope="module")
def cascade(snips_cascade_student) -> StudentCascade:
    return load_student(snips_cascade_student, load_task(EXAMPLES / "snips"), threads=1)


def test_each_item_is_answered_by_the_first_step_sure_enough(cascade):
    task = load_task(EXAMPLES / "snips")
    texts = [eg.text for eg in read_examples(EXAMPLES / "snips" / "test.jsonl", task)]
    bow, encoder = cascade.steps
    (threshold,) = cascade.thresholds
    assert threshold >= task.routing.accept_threshold  # never keeps what routing would not

    answers = cascade.predict(texts)
    cheap, dear = bow.predict(texts), encoder.predict(texts)
    kept = [a.confidence >= threshold for a in cheap]
    assert 0 < sum(kept) < len(texts), "both steps should answer some of 700 SNIPS items"
    for answer, own, passed_on, is_kept in zip(answers, cheap, dear, kept):
        expected = own if is_kept else passed_on
        # The encoder sees other batches inside the cascade: padding moves the last digits.
        assert answer.labels == expected.labels
        assert answer.confidence == pytest.approx(expected.confidence, abs=1e-6)
        step = "bow" if is_kept else "encoder"
        assert answer.model_version == f"{cascade.version}:{step}"


def test_the_cascade_directory_holds_its_steps_and_reports_each_share(snips_cascade_student):
    meta = json.loads((snips_cascade_student / "loopline.json").read_text())
    assert meta["architecture"] == "cascade"
    assert [step["architecture"] for step in meta["steps"]] == ["bow", "encoder"]
    assert meta["steps"][-1]["threshold"] is None
    for step in meta["steps"]:
        step_meta = json.loads((snips_cascade_student / step["path"] / "loopline.json").read_text())
        assert step_meta["architecture"] == step["architecture"]
    metrics = meta["metrics"]
    assert metrics["share_bow"] + metrics["share_encoder"] == pytest.approx(1.0)
    for name in ("accuracy", "macro_f1", "ece_calibrated", "predict_docs_per_s"):
        assert name in metrics


def test_a_cascade_for_another_task_or_missing_a_step_is_refused(snips_cascade_student, tmp_path):
    task = load_task(EXAMPLES / "snips")
    with pytest.raises(ModelError, match="made for task 'snips'"):
        load_student(snips_cascade_student, task.model_copy(update={"name": "other"}))
    meta = json.loads((snips_cascade_student / "loopline.json").read_text())
    meta["steps"] = meta["steps"][:1]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "loopline.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="a cascade needs at least two steps"):
        load_student(broken)
