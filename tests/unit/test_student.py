"""The student: trained on tiny real subsets (a few seconds), saved, loaded, predicting."""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from loopline.processors.data import LabelledText, read_examples, tokenizer_pipeline
from loopline.processors.evaluation import evaluate
from loopline.processors.metrics import score
from loopline.processors.registry import make
from loopline.processors.student import (
    META_FILE,
    PIPELINE_DIR,
    RAW,
    RELIABILITY_PLOT,
    Candidates,
    Student,
    decode_entities,
    label_scores,
)
from loopline.processors.training import train, weighted_epoch
from loopline.schemas import (
    ConfigError,
    DataError,
    LLMUnavailable,
    ModelError,
    Span,
    TaskConfig,
    load_task,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CARD_LABELS = {
    "card_arrival": "A card that was sent has not arrived yet.",
    "lost_or_stolen_card": "The card has been lost or stolen.",
    "exchange_rate": "Which exchange rates are used.",
}


def card_task(**changes) -> TaskConfig:
    fields = {
        "name": "cards",
        "kind": "textcat",
        "labels": CARD_LABELS,
        "topics": {"prefix": "t."},
        "student": {"architecture": "bow", "epochs": 4},
    }
    return TaskConfig.model_validate({**fields, **changes})


def card_examples() -> list[LabelledText]:
    banking = load_task(EXAMPLES / "banking77")
    examples = read_examples(EXAMPLES / "banking77" / "train.jsonl", banking)
    return [eg for eg in examples if eg.labels[0] in CARD_LABELS]


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    task = card_task()
    out = tmp_path_factory.mktemp("models") / "cards"
    report = train(task, card_examples(), out_dir=out)
    return task, out, report


@pytest.fixture(scope="module")
def student(cards):
    task, out, _ = cards
    return Student.load(out, task)


def test_predict_gives_one_calibrated_label_per_text(student):
    examples = card_examples()
    annotations = student.predict([eg.text for eg in examples], batch_size=16)
    assert len(annotations) == len(examples)
    for annotation in annotations:
        (label,) = annotation.labels
        assert set(annotation.scores) == set(CARD_LABELS)
        assert math.isclose(sum(annotation.scores.values()), 1.0, rel_tol=1e-6)
        assert annotation.confidence == max(annotation.scores.values()) == annotation.scores[label]
    right = sum(a.labels == eg.labels for a, eg in zip(annotations, examples))
    assert right / len(examples) > 0.8, "a student should learn its own training data"


def test_empty_text_still_gets_an_answer(student):
    annotations = student.predict(["", "   ", "my card has not arrived"])
    assert [len(a.labels) for a in annotations] == [1, 1, 1]
    assert annotations[0].confidence == pytest.approx(1 / len(CARD_LABELS))
    assert annotations[2].confidence > annotations[0].confidence


def test_annotate_is_predict_off_the_event_loop(student):
    texts = ["where is my card", "what exchange rate do you use"]
    assert asyncio.run(student.annotate(texts)) == student.predict(texts)
    assert (student.source, student.task_name, student.kind) == ("student", "cards", "textcat")


def test_label_scores_keep_the_highest_first():
    probs = np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    labels = ["a", "b", "c"]
    assert label_scores(probs, labels, 2) == [{"b": 0.6, "c": 0.3}, {"c": 0.6, "a": 0.2}]
    assert label_scores(probs, labels, 0) == [dict(zip(labels, row)) for row in probs.tolist()]
    assert label_scores(probs, labels, 5) == label_scores(probs, labels, 0)


def test_a_student_loaded_for_a_task_keeps_the_scores_its_messages_carry(cards):
    _, out, _ = cards
    texts = [eg.text for eg in card_examples()[:20]]
    full = Student.load(out).predict(texts)
    trimmed = Student.load(out, card_task(scores_top_k=2)).predict(texts)
    for whole, kept in zip(full, trimmed):
        assert kept == whole.with_top_scores(2)
        assert list(kept.scores) == sorted(whole.scores, key=whole.scores.get, reverse=True)[:2]


def test_model_directory_holds_pipeline_meta_and_plot(cards):
    task, out, report = cards
    meta = json.loads((out / META_FILE).read_text())
    assert (out / PIPELINE_DIR / "meta.json").is_file()
    assert (out / RELIABILITY_PLOT).stat().st_size > 0
    assert meta["version"] == report.version and meta["version"].startswith("cards-")
    assert meta["labels"] == list(CARD_LABELS)
    assert meta["temperature"] > 0
    assert meta["parent_version"] is None
    assert meta["calibration_data"] == "train_share:0.2"
    assert meta["data_counts"]["heldout"] + meta["data_counts"]["train"] == len(card_examples())
    figures = {"accuracy", "macro_f1", "ece_raw", "ece_calibrated", "accepted_share"}
    figures |= {"train_seconds", "predict_docs_per_s", "latency_single_ms_p50", "model_mb"}
    assert figures <= set(meta["metrics"])


def test_registry_builds_the_student(cards):
    task, out, report = cards
    built = make("loopline.Student.v1", path=out, task=task)
    assert isinstance(built, Student) and built.version == report.version


def test_load_refuses_missing_or_incomplete_directories(cards, tmp_path):
    _, out, _ = cards
    with pytest.raises(ModelError, match="no model directory there; train one"):
        Student.load(tmp_path / "nothing")
    with pytest.raises(ModelError, match="no loopline.json"):
        Student.load(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        Student.load(tmp_path)
    shutil.copy(out / META_FILE, tmp_path / META_FILE)
    with pytest.raises(ModelError, match="no pipeline/ directory"):
        Student.load(tmp_path)
    (tmp_path / PIPELINE_DIR).mkdir()
    with pytest.raises(ModelError, match="cannot load the spaCy pipeline"):
        Student.load(tmp_path)


def test_load_refuses_a_model_for_another_task_or_labels(cards):
    _, out, _ = cards
    with pytest.raises(ModelError, match="made for task 'cards'"):
        Student.load(out, card_task(name="other"))
    fewer = dict(list(CARD_LABELS.items())[:2])
    with pytest.raises(ModelError, match=r"missing \[\], extra \['exchange_rate'\]"):
        Student.load(out, card_task(labels=fewer))
    reordered = dict(reversed(list(CARD_LABELS.items())))
    with pytest.raises(ModelError, match="in another order"):
        Student.load(out, card_task(labels=reordered))


def test_existing_model_directory_is_not_overwritten(cards):
    task, out, _ = cards
    with pytest.raises(ConfigError, match="already exists"):
        train(task, card_examples(), out_dir=out)


def test_too_little_held_out_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="calibration needs at least 20"):
        train(card_task(), card_examples()[:30], out_dir=tmp_path / "m")


def test_multilabel_confidence_is_the_chance_the_whole_set_is_right(tmp_path):
    task = card_task(kind="textcat_multilabel")
    train(task, card_examples(), out_dir=tmp_path / "m")
    student = Student.load(tmp_path / "m", task)
    for annotation in student.predict(["my card was stolen", "card not here yet", "hello"]):
        chosen = set(annotation.labels)
        scores = annotation.scores.items()
        expected = math.prod(p if label in chosen else 1 - p for label, p in scores)
        assert annotation.confidence == pytest.approx(expected)
        assert chosen == {label for label, p in annotation.scores.items() if p > 0.5}


PEOPLE = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Hanoi", "Perth", "Cairo"]
TEMPLATES = ["{p} flew to {c} today", "I met {p} in {c} .", "{c} is where {p} lives", "hello {p}"]


def templated_entities(n: int, seed: int) -> list[LabelledText]:
    """Sentences from templates: a small NER set a model can learn in a few seconds."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        text = template.format(p=person, c=city)
        start = text.index(person)
        spans = [Span(start=start, end=start + len(person), label="person")]
        if "{c}" in template:
            start = text.index(city)
            spans.append(Span(start=start, end=start + len(city), label="city"))
        examples.append(LabelledText(text=text, spans=sorted(spans, key=lambda s: s.start)))
    return examples


def test_ner_student_finds_scored_entities_on_token_boundaries(tmp_path):
    task = TaskConfig(
        name="people",
        kind="ner",
        labels={"person": "A person's name.", "city": "A city."},
        topics={"prefix": "t."},
        student={"epochs": 6, "batch_size": 16},
    )
    report = train(task, templated_entities(150, seed=0), out_dir=tmp_path / "ner")
    assert {"precision", "recall", "f1", "ece_raw", "ece_calibrated"} <= set(report.metrics)
    student = Student.load(tmp_path / "ner", task)
    unseen = templated_entities(40, seed=1)
    annotations = student.predict([eg.text for eg in unseen])
    assert score("ner", task.label_names, unseen, annotations).main > 0.8
    tokenizer = tokenizer_pipeline()
    for example, annotation in zip(unseen, annotations):
        doc = tokenizer.make_doc(example.text)
        for span in annotation.spans:
            assert doc.char_span(span.start, span.end) is not None
            assert annotation.confidence <= span.score


def test_entity_decoding_by_hand():
    doc = tokenizer_pipeline().make_doc("Ada met Bo")
    # candidates (token spans) and softmax over [person, city, none]
    candidates = Candidates(
        starts=np.array([0, 0, 2, 1]),
        ends=np.array([1, 2, 3, 2]),
        lengths=np.array([4]),
        probs=np.array(
            [
                [0.9, 0.05, 0.05],  # "Ada": person, kept first
                [0.6, 0.1, 0.3],  # "Ada met": person, overlaps "Ada": dropped
                [0.3, 0.5, 0.2],  # "Bo": city
                [0.1, 0.1, 0.8],  # "met": no entity, does not overlap: counts as rejected
            ]
        ),
    )
    (annotation,) = decode_entities([doc], candidates, ["person", "city"], RAW)
    assert [(s.start, s.end, s.label) for s in annotation.spans] == [
        (0, 3, "person"),
        (8, 10, "city"),
    ]
    assert [s.score for s in annotation.spans] == pytest.approx([0.9, 0.5])
    assert annotation.confidence == pytest.approx(0.9 * 0.5 * 0.8)


def test_weighted_epoch_repeats_and_samples_by_weight():
    epoch = weighted_epoch(["gold", "double", "half"], [1.0, 2.0, 0.5], random.Random(0))
    assert epoch.count("gold") == 1 and epoch.count("double") == 2
    halves = sum(
        weighted_epoch(["half"], [0.5], random.Random(seed)).count("half") for seed in range(400)
    )
    assert 160 < halves < 240


def test_evaluate_scores_the_student_through_the_processor_interface(student):
    examples = card_examples()[:50]
    report = asyncio.run(evaluate(student, card_task(), examples, batch_size=16))
    predicted = student.predict([eg.text for eg in examples])
    expected = score("textcat", list(CARD_LABELS), examples, predicted)
    assert report.n == report.answered == 50
    assert report.scores.overall == expected.overall
    assert len(report.batch_latencies_ms) == 4
    assert report.tokens is None and report.errors == {}
    figures = report.to_dict()
    assert {"n", "accuracy", "items_per_s", "latency_p50_ms", "ece"} <= set(figures)


class FailingEveryOther:
    """Fault injection: a paid annotator whose every other item fails."""

    source = "llm"
    version = "flaky"

    def __init__(self, inner: Student) -> None:
        self.inner = inner
        self.usage = SimpleNamespace(total_tokens=0)

    async def annotate(self, texts):
        self.usage.total_tokens += 10 * len(texts)
        answers = self.inner.predict(texts)
        return [a if i % 2 == 0 else LLMUnavailable("down") for i, a in enumerate(answers)]


def test_evaluate_counts_failures_as_wrong_and_prices_tokens(student):
    examples = card_examples()[:20]
    flaky = FailingEveryOther(student)
    report = asyncio.run(
        evaluate(flaky, card_task(), examples, batch_size=4, price_per_1k_tokens=2.0)
    )
    assert report.errors == {"LLMUnavailable": 10}
    assert report.answered == 10
    answers = student.predict([eg.text for eg in examples])
    right = sum(a.labels == eg.labels for a, eg in list(zip(answers, examples))[::2])
    assert report.scores.overall["accuracy"] == pytest.approx(right / 20)
    assert (report.tokens, report.cost) == (200, pytest.approx(0.4))
