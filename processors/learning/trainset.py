"""Corrections folded into a training set and a fixed evaluation set. Pure: no I/O.

Rules, applied per item id:

- the latest gold (human) answer wins (by its time; on a tie, the one folded in last);
- gold always beats silver (LLM): an id with any gold answer never trains on its silver one,
  and a gold `reject` or `ignore` keeps the id out of training altogether;
- silver trains with `silver_weight`; gold with weight 1;
- ids are deduplicated: one example per id.

Evaluation. An id belongs to the evaluation set when a hash of it falls below `eval_share`,
so the split is the same on every machine and after every restart, and an id never moves
between the two sets. Evaluation ids are never trained on, gold or silver; their silver
answers are kept beside the gold ones as evidence of how good the LLM is on them. A fixed
evaluation file adds more gold items; training items with the same text are left out.

The caller checks corrections against the task first (labels in the label set, spans on
token boundaries); what does not fit belongs in the dead-letter topic, not here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from loopline.processors.data import LabelledText
from loopline.processors.training import MIN_HELDOUT
from loopline.schemas import Correction

MIN_EVAL_ITEMS = 20
"""Fewer gold evaluation items than this cannot tell two models apart."""


def in_eval_split(item_id: str, eval_share: float) -> bool:
    """Whether `item_id` is held out for evaluation: stable across processes and machines."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_share


@dataclass(frozen=True)
class Snapshot:
    """What one training run uses. `eval_llm[i]` is the LLM's answer to `eval[i]`, if any."""

    train: list[LabelledText]
    eval: list[LabelledText]
    eval_llm: list[LabelledText | None]
    counts: dict[str, int]
    data_hash: str

    @property
    def gold(self) -> int:
        return self.counts["gold"]


@dataclass
class TrainingSet:
    """The latest gold and silver answer per id, ready to be snapshotted for a run."""

    eval_share: float
    silver_weight: float
    fixed_eval: Sequence[LabelledText] = ()
    gold: dict[str, Correction] = field(default_factory=dict)
    silver: dict[str, Correction] = field(default_factory=dict)

    def add(self, correction: Correction) -> None:
        """Fold in one correction (checked against the task by the caller)."""
        answers = self.gold if correction.source == "human" else self.silver
        known = answers.get(correction.id)
        if known is None or correction.time >= known.time:
            answers[correction.id] = correction

    def snapshot(self) -> Snapshot:
        fixed_texts = {eg.text for eg in self.fixed_eval}
        train: list[LabelledText] = []
        evaluation: list[LabelledText] = list(self.fixed_eval)
        eval_llm: list[LabelledText | None] = [None] * len(self.fixed_eval)
        for item_id in sorted(self.gold.keys() | self.silver.keys()):
            gold, silver = self.gold.get(item_id), self.silver.get(item_id)
            if in_eval_split(item_id, self.eval_share):
                if gold is not None and gold.decision == "accept":
                    evaluation.append(example(gold))
                    eval_llm.append(example(silver) if _usable(silver) else None)
                continue
            chosen = gold if gold is not None else silver
            if _usable(chosen) and chosen.text not in fixed_texts:
                weight = 1.0 if chosen.source == "human" else self.silver_weight
                train.append(example(chosen, weight))
        counts = {
            "gold": len(self.gold),
            "silver": len(self.silver),
            "train": len(train),
            "train_gold": sum(eg.source == "human" for eg in train),
            "train_silver": sum(eg.source == "llm" for eg in train),
            "eval": len(evaluation),
            "eval_fixed": len(self.fixed_eval),
        }
        return Snapshot(train, evaluation, eval_llm, counts, fingerprint(train, evaluation))


def example(correction: Correction, weight: float = 1.0) -> LabelledText:
    return LabelledText(
        text=correction.text,
        labels=correction.labels,
        spans=[span.model_copy(update={"score": None}) for span in correction.spans],
        source=correction.source,
        weight=weight,
    )


def _usable(correction: Correction | None) -> bool:
    return correction is not None and correction.decision == "accept"


def fingerprint(train: Sequence[LabelledText], evaluation: Sequence[LabelledText]) -> str:
    """Changes whenever what a run would train or evaluate on changes."""
    digest = hashlib.sha256()
    for part, examples in (("train", train), ("eval", evaluation)):
        for eg in examples:
            digest.update(json.dumps([part, eg.model_dump(mode="json")], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def shortfall(snapshot: Snapshot, calibration_share: float) -> str | None:
    """Why `snapshot` cannot make a student yet (None when it can), in words."""
    if len(snapshot.eval) < MIN_EVAL_ITEMS:
        return (
            f"{len(snapshot.eval)} gold items in the evaluation set, {MIN_EVAL_ITEMS} needed: "
            "label more items (or add learning.eval_file)"
        )
    held_out = math.ceil(calibration_share * snapshot.counts["train_gold"])
    if held_out < MIN_HELDOUT:
        needed = math.ceil(MIN_HELDOUT / calibration_share)
        return (
            f"{snapshot.counts['train_gold']} gold training items, {needed} needed to hold out "
            f"{MIN_HELDOUT} for calibration: label more items"
        )
    return None
