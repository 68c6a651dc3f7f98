"""The task config: one YAML file per task says what to annotate and how to route it.

Example (see ``examples/banking77/task.yml``)::

    name: banking77
    kind: textcat
    labels:
      card_arrival: The customer asks when their new card will arrive.
      ...
    routing:
      accept_threshold: 0.9
    topics:
      prefix: loopline.banking77.
    max_text_chars: 2000
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loopline.schemas.errors import ConfigError

TaskKind = Literal["textcat", "textcat_multilabel", "ner"]
TopicRole = Literal[
    "texts", "predictions", "llm", "review", "answers", "corrections", "models", "deadletter"
]
TOPIC_SUFFIXES: dict[str, str] = {
    "texts": "texts",
    "predictions": "predictions",
    "llm": "llm.requests",
    "review": "review",
    "answers": "answers",
    "corrections": "corrections",
    "models": "models",
    "deadletter": "deadletter",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingConfig(_Section):
    accept_threshold: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Items whose calibrated confidence is at or above this are accepted "
        "from the student; roughly the expected accuracy of accepted items.",
    )
    llm_min_confidence: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Unsure items below this confidence skip the LLM and go straight to "
        "review: set it where the LLM is measurably no better than the student.",
    )
    audit_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of accepted items also sent to review, to measure production "
        "accuracy without bias.",
    )
    target_accuracy: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="When set, each promoted student comes with an accept threshold fitted "
        "on its gold evaluation set: the lowest at which accepted items reach this accuracy. "
        "An accept_threshold written in this file still wins.",
    )
    llm_bands: list[tuple[float, float]] | None = Field(
        default=None,
        description="Confidence bands [low, high) where unsure items go to the LLM; elsewhere "
        "they go straight to review. Unset: every band from llm_min_confidence up. Fitted "
        "with each promoted student from the evidence (where the LLM is measurably better "
        "than the student); written here, or llm_min_confidence written here, it wins.",
    )

    @model_validator(mode="after")
    def _bands_are_intervals(self) -> RoutingConfig:
        for low, high in self.llm_bands or ():
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"llm_bands: [{low}, {high}) is not a band inside [0, 1]")
        return self

    def sends_to_llm(self, confidence: float) -> bool:
        """Whether an unsure item of this confidence goes to the LLM (else to people)."""
        if confidence < self.llm_min_confidence:
            return False
        if self.llm_bands is None:
            return True
        return any(low <= confidence < high for low, high in self.llm_bands)


class TopicsConfig(_Section):
    prefix: str = Field(
        description="Prepended to every topic name; keeps tasks apart on one cluster.",
        pattern=r"^[A-Za-z0-9._-]*$",
    )
    partitions: int = Field(default=4, ge=1, description="Partitions for topics loopline creates.")
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas for topics loopline creates (3 on a real cluster)."
    )
    input: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="An existing topic to read texts from instead of `<prefix>texts` (it "
        "must exist, with at least `partitions` partitions; loopline never creates it).",
    )

    def name(self, role: TopicRole) -> str:
        if role == "texts" and self.input:
            return self.input
        return f"{self.prefix}{TOPIC_SUFFIXES[role]}"


StepArchitecture = Literal["bow", "ensemble", "cnn", "encoder"]


class StudentConfig(_Section):
    architecture: Literal["bow", "ensemble", "cnn", "spancat", "encoder", "cascade"] = Field(
        default="ensemble",
        description="spaCy model: `bow` (fastest), `ensemble` (bow + CNN), `cnn`; NER uses "
        "`spancat` (a score per entity). `encoder`: a pretrained sentence encoder with a "
        "linear head (far better with few labels, ~100x slower than bow). `cascade`: the "
        "`steps` below, cheapest first, each passing on only what it is unsure of.",
    )
    steps: list[StepArchitecture] = Field(
        default_factory=list,
        description="For `cascade`: its students, cheapest first (e.g. [bow, encoder]).",
    )
    cascade_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="For `cascade`: each step keeps the items it is sure of, at the lowest "
        "threshold (never below routing.accept_threshold) at which held-out accuracy stays "
        "within this of the later steps alone.",
    )
    encoder: Literal["all-minilm-l6-v2"] = Field(
        default="all-minilm-l6-v2", description="For `encoder`: the sentence encoder."
    )
    head_c: float = Field(
        default=10.0,
        gt=0.0,
        description="For `encoder`: inverse L2 regularisation strength of the logistic head.",
    )
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: int = 0
    calibration_share: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Share of training data held out for calibration when no --eval is given.",
    )

    @model_validator(mode="after")
    def _steps_make_a_cascade(self) -> StudentConfig:
        if self.architecture == "cascade":
            if len(self.steps) < 2 or len(set(self.steps)) < len(self.steps):
                raise ValueError("a cascade needs at least two different steps, cheapest first")
        elif self.steps:
            raise ValueError("steps are for architecture: cascade")
        return self


class LLMTaskConfig(_Section):
    examples: int = Field(
        default=4, ge=0, description="Human corrections shown to the LLM as examples."
    )
    min_confidence: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="LLM answers below this confidence also go to review.",
    )


class ReviewConfig(_Section):
    overlap: int = Field(
        default=1,
        ge=1,
        description="Answers from distinct reviewers an item needs; when they disagree it "
        "goes to one more reviewer and the majority decides.",
    )
    lease_ttl_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a reviewer holds an item; the page renews it while open, an "
        "expired lease returns the item to the queue.",
    )


class LearningConfig(_Section):
    """How corrections become new students: when to train, what to hold out, when to promote."""

    min_new_gold: int = Field(
        default=50, ge=1, description="Train when this many new gold-labelled items arrived."
    )
    interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="Also train this often when anything is new (gold or silver).",
    )
    silver_weight: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Training weight of an LLM (silver) answer; a human (gold) one weighs 1.",
    )
    eval_share: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Share of gold items (chosen by a hash of the id, stable everywhere) kept "
        "as the evaluation set and never trained on.",
    )
    eval_file: str | None = Field(
        default=None,
        description="A fixed gold JSONL file added to the evaluation set (relative paths: "
        "from the directory the trainer runs in).",
    )
    promote_margin: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="A candidate replaces production only when its main score (accuracy, "
        "micro-F1 or entity F1) is higher by at least this on the same evaluation set.",
    )
    max_ece_increase: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="... and its calibration error is not higher by more than this.",
    )
    floor: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The first model of a task is promoted when its main score reaches this.",
    )


class TaskConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: TaskKind
    labels: dict[str, str] = Field(
        description="Label -> one-line description (the LLM sees the descriptions)."
    )
    routing: RoutingConfig = RoutingConfig()
    topics: TopicsConfig
    max_text_chars: int = Field(default=2000, ge=1)
    scores_top_k: int = Field(
        default=5,
        ge=0,
        description="How many of the highest label scores each output message carries "
        "(0: all labels). Keeps messages small for tasks with many labels.",
    )
    student: StudentConfig = StudentConfig()
    llm: LLMTaskConfig = LLMTaskConfig()
    review: ReviewConfig = ReviewConfig()
    learning: LearningConfig = LearningConfig()

    @model_validator(mode="after")
    def _enough_labels(self) -> TaskConfig:
        needed = 2 if self.kind == "textcat" else 1
        if len(self.labels) < needed:
            raise ValueError(f"a {self.kind} task needs at least {needed} labels")
        return self

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def topic(self, role: TopicRole) -> str:
        return self.topics.name(role)


def load_task(path: str | Path) -> TaskConfig:
    """Read and validate a task YAML file, with errors that name the file and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / "task.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"task config {path} not found: pass --task PATH/TO/task.yml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"task config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"task config {path} must be a YAML mapping of fields")
    try:
        return TaskConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"task config {path} is invalid: {problems}") from None
