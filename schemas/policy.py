"""A routing policy fitted on gold labels, with the evidence behind it.

Published with each promoted student, so that a person can see why items of a given
confidence are accepted, sent to the LLM or sent to people, and check the counts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BandVerdict = Literal["llm_better", "llm_not_better", "too_little_evidence"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdEvidence(_Frozen):
    """How the accept threshold was chosen: the accuracy of gold items at or above it."""

    target_accuracy: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(ge=0.0, le=1.0)
    reached: bool = Field(description="False: no threshold reached the target; 1.0 was kept.")
    items: int = Field(ge=0, description="Gold items the student answered.")
    accepted: int = Field(ge=0, description="Of them, at or above the threshold.")
    accepted_correct: int = Field(ge=0)


class BandEvidence(_Frozen):
    """One confidence band below the accept threshold: the student and the LLM on the same
    gold items (those the LLM answered). Only items where exactly one of them was right
    tell them apart (`llm_only`, `student_only`): the sign test runs on those."""

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    items: int = Field(ge=0)
    student_correct: int = Field(ge=0)
    llm_correct: int = Field(ge=0)
    llm_only: int = Field(ge=0, description="The LLM right, the student wrong.")
    student_only: int = Field(ge=0, description="The student right, the LLM wrong.")
    p_value: float | None = Field(
        default=None, description="One-sided sign test that the LLM is better (None: no test)."
    )
    verdict: BandVerdict

    @property
    def uses_llm(self) -> bool:
        """Unmeasured bands keep going to the LLM, so that the evidence keeps coming."""
        return self.verdict != "llm_not_better"


class RoutingPolicy(_Frozen):
    """What the evidence says routing should be; `None` where it says nothing."""

    accept_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    llm_bands: list[tuple[float, float]] | None = None
    threshold_evidence: ThresholdEvidence | None = None
    band_evidence: list[BandEvidence] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Why a part was not fitted.")
