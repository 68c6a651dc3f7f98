"""The messages loopline reads and writes on Kafka.

Every message carries ``schema_version`` so that consumers can refuse what they do not
understand. Outputs hold no wall-clock fields: a message re-sent after a crash is then
byte-identical to the first copy (same key, same content), which is what the delivery
policy promises. JSON Schemas for all of them are exported by ``loopline schemas export``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopline.schemas.policy import RoutingPolicy

SCHEMA_VERSION = 1
# Dead letters keep at most this much of the original value (base64 makes it a third larger),
# so that one always fits on its topic however large the message it stands for.
ORIGINAL_PREFIX_BYTES = 32 * 1024

Source = Literal["student", "llm", "human"]
Route = Literal["llm", "review"]
AnswerDecision = Literal["accept", "reject", "ignore"]

ItemId = Annotated[
    str,
    Field(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Free text without control characters (they separate key parts on "
        "compacted topics).",
    ),
]
# Silver corrections are keyed `<id><KEY_SEPARATOR>llm`: ids hold no control characters, so
# such a key can never equal a gold key (the bare id) on the compacted `corrections` topic.
KEY_SEPARATOR = "\x1f"


def content_id(text: str) -> str:
    """A stable id for a text, used when a producer sends none."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class Message(BaseModel):
    """Base of every message: strict about unknown fields, immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class TextIn(Message):
    """A raw text written to the `texts` topic by a producer."""

    id: ItemId = Field(
        default="", description="Item id; derived from the text when absent or empty."
    )
    text: str = Field(description="The text to annotate.")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Passed through untouched to every output."
    )

    @model_validator(mode="after")
    def _derive_id(self) -> TextIn:
        if not self.id:
            object.__setattr__(self, "id", content_id(self.text))
        return self


class Span(BaseModel):
    """A labelled character span; `end` is exclusive, as in Prodigy and spaCy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: str
    score: float | None = Field(default=None, ge=0.0, le=1.0)


class Annotation(BaseModel):
    """What any annotator (student, LLM, human) says about one text.

    `labels` holds the chosen labels (exactly one for exclusive textcat), `scores` the
    calibrated probability of each label, `spans` the entities for NER. `confidence` is
    the calibrated probability that the whole annotation is right. `model_version` names
    the model that made it when one annotator holds several (a cascade of students says
    which step answered); otherwise the annotator's own version applies.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    spans: list[Span] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    model_version: str | None = None

    def with_top_scores(self, k: int) -> Annotation:
        """A copy keeping only the `k` highest label scores (all when k is 0)."""
        if k == 0 or len(self.scores) <= k:
            return self
        top = sorted(self.scores.items(), key=lambda pair: pair[1], reverse=True)[:k]
        return self.model_copy(update={"scores": dict(top)})


class Suggestion(BaseModel):
    """An annotation together with who made it, for routed items."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source
    model_version: str
    annotation: Annotation
    prompt_version: str | None = None


class Prediction(Message):
    """The product: one structured answer per item on the `predictions` topic.

    A later `revision` of the same id supersedes an earlier one (student 0, LLM 1, human 2).
    """

    id: str
    task: str
    labels: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    spans: list[Span] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    source: Source
    model_version: str
    revision: int = Field(ge=0)
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_suggestion(
        cls, item: TextIn, task: str, suggestion: Suggestion, revision: int
    ) -> Prediction:
        annotation = suggestion.annotation
        return cls(
            id=item.id,
            task=task,
            labels=annotation.labels,
            scores=annotation.scores,
            spans=annotation.spans,
            confidence=annotation.confidence,
            source=suggestion.source,
            model_version=annotation.model_version or suggestion.model_version,
            revision=revision,
            meta=item.meta,
        )


class RoutedItem(Message):
    """An item sent on to the LLM (`llm.requests`) or to people (`review`)."""

    id: str
    task: str
    item: TextIn
    route: Route
    suggestions: list[Suggestion] = Field(
        default_factory=list, description="Every annotator's answer so far, student first."
    )
    reason: str = Field(description="Machine-readable reason code, e.g. `low_confidence`.")
    detail: str = Field(default="", description="The reason in words, for people.")
    priority: float = Field(
        default=0.0, description="Higher is more urgent: reviewers see these first."
    )


class Correction(Message):
    """A gold (human) or silver (LLM) annotation: the source of training and evaluation data.

    On the compacted `corrections` topic gold is keyed by the item id and silver by a key of
    its own (`key`), so a later LLM answer can never replace a human label.
    """

    id: ItemId
    task: str
    text: str
    labels: list[str] = Field(default_factory=list)
    spans: list[Span] = Field(default_factory=list)
    decision: AnswerDecision = "accept"
    source: Literal["human", "llm"] = "human"
    reviewer: str = Field(description="Who answered: a person's name or `llm:<model>`.")
    time: datetime

    @property
    def key(self) -> str:
        """The Kafka key: the id for gold, `<id>\\x1fllm` for silver (never a gold key)."""
        return self.id if self.source == "human" else f"{self.id}{KEY_SEPARATOR}{self.source}"


class Answer(Message):
    """One reviewer's answer to one review item, on `answers` (keyed by item id): the audit
    trail. With `review.overlap` > 1 an item gets several; the decided one becomes a gold
    Correction."""

    id: ItemId
    task: str
    reviewer: str
    lease_id: str = Field(description="The lease the answer was given under (or `import:...`).")
    edit: int = Field(
        default=0, ge=0, description="0 for the first answer under a lease; n for its n-th edit."
    )
    decision: AnswerDecision
    labels: list[str] = Field(default_factory=list)
    spans: list[Span] = Field(default_factory=list)
    suggestions: list[Suggestion] = Field(
        default_factory=list, description="The suggestions the reviewer was shown."
    )
    seconds: float = Field(ge=0.0, description="From the lease to the answer.")
    time: datetime

    @property
    def answer_id(self) -> str:
        """Unique per answer message: a retried write repeats it, an edit does not."""
        return f"{self.lease_id}:{self.edit}"


ModelStatus = Literal["candidate", "production", "rejected", "retired"]


class BandAccuracy(BaseModel):
    """Accuracy of the student's answers whose confidence falls in [low, high), on the gold
    evaluation set; and of the LLM's (silver) answers on the same items, where it gave one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=0)
    accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    llm_n: int = Field(default=0, ge=0)
    llm_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)


class ModelEvent(Message):
    """One student version and what became of it, on the compacted `models` topic.

    Keyed by `version`; the key `production` holds a copy of the current production
    version's event with `history` (the production versions before it), which is what
    workers follow and what `rollback` steps back through.
    """

    task: str
    version: str
    artifact: str = Field(
        description="Where the model lives: a key inside the artifact store "
        "(LOOPLINE_ARTIFACTS), `<task>/<version>`."
    )
    status: ModelStatus = "candidate"
    reason: str = Field(default="", description="Why it has this status, in words.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Figures on the evaluation set: the main score, macro_f1, ece, eval_n.",
    )
    bands: list[BandAccuracy] = Field(
        default_factory=list, description="Accuracy per confidence band on the evaluation set."
    )
    compared_with: str | None = Field(
        default=None, description="The production version the gate compared it with."
    )
    baseline_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="That version's figures on the same evaluation set.",
    )
    parent_version: str | None = None
    config_hash: str = ""
    data_hash: str = Field(default="", description="Fingerprint of the training data.")
    data_counts: dict[str, int] = Field(default_factory=dict)
    policy: RoutingPolicy | None = Field(
        default=None,
        description="Routing fitted on the evaluation set, with its evidence: the accept "
        "threshold for routing.target_accuracy and the bands where the LLM is measurably "
        "better. Workers apply it where the task file sets no value.",
    )
    history: list[str] = Field(
        default_factory=list,
        description="On the `production` key: earlier production versions, latest last.",
    )
    created_at: datetime


class DeadLetter(Message):
    """A message no stage could handle, kept with (a prefix of) its original bytes and the reason.

    A dead letter must always fit on its topic, so it keeps at most the first 32 KiB of the
    original, with the original's length and SHA-256; the source topic/partition/offset
    point at the whole message. In JSON, `original` is URL-safe base64
    (`base64.urlsafe_b64decode` gives the bytes back).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    task: str
    stage: str = Field(description="Which stage gave up, e.g. `decode` or `annotate`.")
    error_type: str = Field(description="Machine-readable error code, e.g. `invalid_json`.")
    message: str = Field(description="What went wrong and what to do about it.")
    original: bytes = Field(
        description="The message value exactly as received, or its first "
        f"{ORIGINAL_PREFIX_BYTES} bytes when it is longer (see `original_length`)."
    )
    original_length: int = Field(ge=0, description="Bytes in the whole original value.")
    original_sha256: str = Field(description="SHA-256 of the whole original value, in hex.")
    source_topic: str
    source_partition: int
    source_offset: int

    @property
    def key(self) -> str:
        return f"{self.source_topic}:{self.source_partition}:{self.source_offset}"

    @property
    def truncated(self) -> bool:
        """Whether `original` is only a prefix: read the source offset for the whole value."""
        return len(self.original) < self.original_length


MESSAGES: tuple[type[Message], ...] = (
    TextIn,
    Prediction,
    RoutedItem,
    Correction,
    Answer,
    ModelEvent,
    DeadLetter,
)
