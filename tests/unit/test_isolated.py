"""The student in a child process answers exactly as it does in-process."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from loopline.processors.data import read_examples
from loopline.processors.isolated import InChildProcess
from loopline.processors.student import Student
from loopline.schemas import ModelError, load_task
from tests.fixtures.models import EXAMPLES


def test_child_process_answers_like_the_student_in_process(banking_student):
    task = load_task(EXAMPLES / "banking77")
    texts = [eg.text for eg in read_examples(EXAMPLES / "banking77" / "test.jsonl", task)[:100]]
    in_process = Student.load(banking_student, task)
    isolated = InChildProcess.start(partial(Student.load, banking_student, task))
    assert (isolated.source, isolated.version) == ("student", in_process.version)
    assert asyncio.run(isolated.annotate(texts)) == in_process.predict(texts)


def test_a_model_that_cannot_load_fails_in_the_parent_with_its_message(tmp_path):
    task = load_task(EXAMPLES / "banking77")
    with pytest.raises(ModelError, match="no model directory there; train one"):
        InChildProcess.start(partial(Student.load, tmp_path / "nothing", task))
