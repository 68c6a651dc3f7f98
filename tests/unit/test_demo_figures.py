"""The demo's per-pass figures from a task's messages: where items went, and how right the
machines' outputs and the student were on the held-back gold labels."""

from __future__ import annotations

from loopline.processors.data import LabelledText
from loopline.schemas import Annotation, Prediction, RoutedItem, Suggestion, TextIn, load_task
from loopline.streams.local.demo import pass_figures
from loopline.streams.report.series import Stamped, TaskRecords
from tests.integration.streaming import EXAMPLES

TASK = load_task(EXAMPLES / "snips" / "task.yml")
RIGHT, WRONG = TASK.label_names[:2]


def student(label: str, version: str = "v1") -> Suggestion:
    return Suggestion(
        source="student",
        model_version=version,
        annotation=Annotation(labels=[label], confidence=0.4),
    )


def predicted(item_id: str, label: str, source: str = "student") -> Stamped:
    revision = {"student": 0, "llm": 1, "human": 2}[source]
    message = Prediction(
        id=item_id,
        task=TASK.name,
        labels=[label],
        confidence=0.95,
        source=source,
        model_version="v1" if source == "student" else "llm",
        revision=revision,
    )
    return Stamped(message, ms=revision)


def routed(item_id: str, route: str, reason: str, *suggestions: Suggestion) -> Stamped:
    message = RoutedItem(
        id=item_id,
        task=TASK.name,
        item=TextIn(id=item_id, text="play some jazz"),
        route=route,
        suggestions=list(suggestions),
        reason=reason,
    )
    return Stamped(message, ms=0)


def test_each_item_counted_once_and_only_machine_outputs_scored():
    gold = {f"p-{i}": LabelledText(text="play some jazz", labels=[RIGHT]) for i in range(6)}
    records = TaskRecords(
        predictions=[
            predicted("p-0", RIGHT),  # accepted, right
            predicted("p-1", WRONG),  # accepted, wrong, and audited
            predicted("p-2", RIGHT, "llm"),  # the LLM answered, no one asked
            predicted("p-3", WRONG, "llm"),  # the LLM disagreed: people asked as well
            predicted("p-3", RIGHT, "human"),  # people's answer: the reference, not scored
            predicted("other-0", RIGHT),  # not this pass's item
        ],
        llm_requests=[
            routed("p-2", "llm", "low_confidence", student(WRONG)),
            routed("p-3", "llm", "low_confidence", student(WRONG)),
            routed("p-5", "llm", "low_confidence", student(RIGHT)),  # the LLM has not answered
        ],
        review=[
            routed("p-1", "review", "audit", student(WRONG)),
            routed("p-3", "review", "llm_disagrees", student(WRONG)),
            routed("p-4", "review", "low_confidence_no_llm", student(RIGHT, "v2")),
        ],
    )
    figures = pass_figures(TASK, gold, records)
    assert figures.routes == {"accepted": 2, "llm": 2, "people": 2}
    assert (figures.outputs, figures.outputs_correct, figures.accuracy) == (3, 2, 2 / 3)
    assert figures.llm_waiting == 1
    # The student: right on p-0, p-4 and p-5; wrong on p-1, p-2, p-3.
    assert figures.student_correct == 3 and figures.student_accuracy == 0.5
    assert figures.versions == ["v1", "v2"]
    assert figures.share("people") == 2 / 6
