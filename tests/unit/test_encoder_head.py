"""The encoder student's linear head on synthetic sentence vectors (no encoder needed)."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.processors.data import LabelledText
from loopline.processors.encoder.student import LinearHead
from loopline.processors.encoder.training import fit_head
from loopline.schemas import DataError, TaskConfig


def task(kind: str, labels: str = "abc") -> TaskConfig:
    return TaskConfig(name="t", kind=kind, labels={x: x for x in labels}, topics={"prefix": "t."})


def clusters(labels_per_item: list[list[str]], seed: int = 0) -> np.ndarray:
    """Unit vectors near one direction per label (a sum for several labels)."""
    rng = np.random.default_rng(seed)
    direction = {x: rng.normal(size=16) for x in "abc"}
    noise = 0.3 * rng.normal(size=(len(labels_per_item), 16))
    vectors = np.array([sum((direction[x] for x in ls), np.zeros(16)) for ls in labels_per_item])
    vectors += noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exclusive_head_learns_the_labels_and_gives_absent_ones_no_mass(tmp_path):
    gold = [["a"], ["b"]] * 20  # no example of "c"
    examples = [LabelledText(text=str(i), labels=g) for i, g in enumerate(gold)]
    head = fit_head(task("textcat"), clusters(gold), examples)
    probs = head.probabilities(clusters(gold, seed=0))
    assert probs.shape == (40, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == [0 if g == ["a"] else 1 for g in gold]).all()
    assert probs[:, 2].max() < 1e-9
    head.save(tmp_path / "head.npz")
    again = LinearHead.load(tmp_path / "head.npz")
    assert np.array_equal(again.probabilities(clusters(gold)), head.probabilities(clusters(gold)))


def test_multilabel_head_has_one_sigmoid_per_label():
    gold = [["a"], ["b"], ["a", "b"], []] * 10  # "c" never occurs
    examples = [LabelledText(text=str(i), labels=g) for i, g in enumerate(gold)]
    head = fit_head(task("textcat_multilabel"), clusters(gold), examples)
    probs = head.probabilities(clusters(gold))
    chosen = probs > 0.5
    assert [[x for x, on in zip("abc", row) if on] for row in chosen] == gold
    assert not head.exclusive and probs[:, 2].max() < 0.1


def test_one_label_is_not_enough_for_an_exclusive_head():
    examples = [LabelledText(text=str(i), labels=["a"]) for i in range(5)]
    with pytest.raises(DataError, match="at least two labels"):
        fit_head(task("textcat"), clusters([["a"]] * 5), examples)
