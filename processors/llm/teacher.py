"""The LLM teacher: a Processor that asks an OpenAI-compatible LLM to annotate texts.

Each answer records the model and prompt version, the tokens it cost, and where its
confidence came from: `logprobs` (the model's probability of its answer, see
`confidence.py`) or `prior` (the server sent no log-probabilities; the confidence is then
`prior_confidence` for every answer, a stand-in to set to the LLM's measured accuracy on
human labels, and it says nothing about any one item).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopline.processors.llm.alignment import align_mentions
from loopline.processors.llm.budget import RateLimiter, TokenBudget
from loopline.processors.llm.cache import ResponseCache
from loopline.processors.llm.client import ChatClient, Completion, Usage
from loopline.processors.llm.confidence import (
    empty_list_probability,
    mention_probabilities,
    multilabel_probabilities,
    textcat_probability,
)
from loopline.processors.llm.parsing import ParsedAnswer, parse_answer
from loopline.processors.llm.prompts import Example, Prompt, build_prompt
from loopline.processors.registry import processors
from loopline.schemas import Annotation, LLMBadAnswer, LLMError, TaskConfig

CHARS_PER_TOKEN_ESTIMATE = 3


class LLMAnswer(BaseModel):
    """One item's answer with everything needed to report, cache and audit it."""

    model_config = ConfigDict(frozen=True)

    annotation: Annotation
    model: str
    prompt_version: str
    usage: Usage = Field(description="Tokens this item cost (zero when served from the cache).")
    cached: bool = False
    confidence_from: Literal["logprobs", "prior"]
    dropped: dict[str, int] = Field(
        default_factory=dict,
        description="NER mentions left out, by reason: not_found, overlap, rejected.",
    )
    raw: str = Field(description="The LLM's answer text, for audits.")


class LLMTeacher:
    """Annotates texts with an LLM; items run concurrently up to the client's bound.

    `annotate` follows the Processor protocol (an Annotation or the LLMError per item, whose
    `code` and message say why). `answer` gives the full LLMAnswer per item, and `usage`
    adds up the tokens of every call made, failed ones included.
    """

    source: Literal["llm"] = "llm"

    def __init__(
        self,
        task: TaskConfig,
        client: ChatClient,
        *,
        examples: Sequence[Example] = (),
        cache: ResponseCache | None = None,
        budget: TokenBudget | None = None,
        prior_confidence: float = 0.5,
        bad_answer_retries: int = 1,
    ) -> None:
        self.task = task
        self.client = client
        self.cache = cache
        self.budget = budget
        self.prior_confidence = prior_confidence
        self.bad_answer_retries = bad_answer_retries
        self.prompt: Prompt = build_prompt(task, examples)
        self.usage = Usage()
        # Budget is reserved only for calls about to go out, not for items still queued.
        self._slots = asyncio.Semaphore(client.max_concurrency)

    @property
    def version(self) -> str:
        return f"{self.client.model}/{self.prompt.version}"

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    def use_examples(self, examples: Sequence[Example]) -> None:
        """Show these human-labelled examples from now on (they change the prompt prefix)."""
        self.prompt = build_prompt(self.task, examples)

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LLMError]:
        answers = await self.answer(texts)
        return [a.annotation if isinstance(a, LLMAnswer) else a for a in answers]

    async def answer(self, texts: Sequence[str]) -> list[LLMAnswer | LLMError]:
        return list(await asyncio.gather(*(self._answer_or_error(text) for text in texts)))

    async def answer_one(self, text: str) -> LLMAnswer:
        """Answer one text, from the cache when it was answered before; raise an LLMError."""
        prompt, cache = self.prompt, self.cache
        key = (
            cache.key(self.client.model, prompt.version, prompt.fingerprint, text) if cache else ""
        )
        if cache and (hit := await cache.get(key)) is not None:
            return LLMAnswer.model_validate_json(hit).model_copy(
                update={"cached": True, "usage": Usage()}
            )
        async with self._slots:
            answer = await self._ask(prompt, text)
        if cache:
            await cache.set(key, answer.model_dump_json())
        return answer

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _answer_or_error(self, text: str) -> LLMAnswer | LLMError:
        try:
            return await self.answer_one(text)
        except LLMError as exc:
            return exc

    async def _ask(self, prompt: Prompt, text: str) -> LLMAnswer:
        """Call the LLM, asking again (up to `bad_answer_retries`) when the answer is unusable."""
        spent, retries_left = Usage(), self.bad_answer_retries
        while True:
            completion = await self._complete(prompt, text)
            spent += completion.usage
            try:
                return self._read(prompt, text, completion, spent)
            except LLMBadAnswer:
                if retries_left == 0:
                    raise
                retries_left -= 1

    async def _complete(self, prompt: Prompt, text: str) -> Completion:
        messages = prompt.messages(text)
        reservation = None
        if self.budget is not None:
            chars = sum(len(message["content"]) for message in messages)
            estimate = chars // CHARS_PER_TOKEN_ESTIMATE + prompt.max_tokens(text)
            reservation = await self.budget.reserve(estimate)
        used = 0
        try:
            completion = await self.client.complete(
                messages, schema=prompt.schema, max_tokens=prompt.max_tokens(text)
            )
            used = completion.usage.total_tokens
            self.usage += completion.usage
            return completion
        finally:
            if reservation is not None:
                await self.budget.settle(reservation, used)

    def _read(self, prompt: Prompt, text: str, completion: Completion, spent: Usage) -> LLMAnswer:
        try:
            parsed = parse_answer(prompt.kind, prompt.labels, completion.text)
        except LLMBadAnswer as error:
            if completion.finish_reason == "length":
                raise LLMBadAnswer(
                    f"the LLM's answer was cut off at {prompt.max_tokens(text)} tokens "
                    f"(a model repeating itself?): {error}"
                ) from None
            raise
        if prompt.kind == "ner":
            annotation, dropped, scored = self._ner_annotation(prompt, text, parsed, completion)
        else:
            annotation, scored = self._labels_annotation(prompt, parsed, completion)
            dropped = {}
        return LLMAnswer(
            annotation=annotation,
            model=self.client.model,
            prompt_version=prompt.version,
            usage=spent,
            confidence_from="logprobs" if scored else "prior",
            dropped=dropped,
            raw=completion.text,
        )

    def _labels_annotation(
        self, prompt: Prompt, parsed: ParsedAnswer, completion: Completion
    ) -> tuple[Annotation, bool]:
        labels = list(parsed.labels)
        scores = _label_scores(prompt, labels, completion)
        confidence = None
        if scores is not None:
            confidence = (
                math.prod(scores.values())
                if labels
                else empty_list_probability(completion.logprobs or (), "labels")
            )
        if confidence is None:
            prior = self.prior_confidence
            return Annotation(
                labels=labels, scores=dict.fromkeys(labels, prior), confidence=prior
            ), False
        return Annotation(labels=labels, scores=scores, confidence=confidence), True

    def _ner_annotation(
        self, prompt: Prompt, text: str, parsed: ParsedAnswer, completion: Completion
    ) -> tuple[Annotation, dict[str, int], bool]:
        mentions = parsed.mentions
        confidence = None
        if completion.logprobs:
            scores = mention_probabilities(completion.logprobs, mentions, prompt.labels)
            if None not in scores:
                mentions = tuple(replace(m, score=s) for m, s in zip(mentions, scores, strict=True))
                confidence = (
                    math.prod(scores)
                    if mentions
                    else empty_list_probability(completion.logprobs, "entities")
                )
        alignment = align_mentions(text, mentions)
        dropped = dict(alignment.dropped)
        if parsed.rejected:
            dropped["rejected"] = parsed.rejected
        scored = confidence is not None
        annotation = Annotation(
            spans=list(alignment.spans),
            confidence=confidence if scored else self.prior_confidence,
        )
        return annotation, dropped, scored


def _label_scores(
    prompt: Prompt, labels: Sequence[str], completion: Completion
) -> dict[str, float] | None:
    """Each chosen label's probability from the logprobs; None when they cannot give it."""
    if not completion.logprobs:
        return None
    if prompt.kind == "textcat":
        score = textcat_probability(completion.logprobs, labels[0], prompt.labels)
        return None if score is None else {labels[0]: score}
    return multilabel_probabilities(completion.logprobs, labels, prompt.labels)


@processors.register("loopline.LLMTeacher.v1")
def make_llm_teacher(
    task: TaskConfig,
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_concurrency: int = 2,
    retries: int = 3,
    cache: ResponseCache | None = None,
    budget: TokenBudget | None = None,
    rate_limiter: RateLimiter | None = None,
    examples: Sequence[Example] = (),
    prior_confidence: float = 0.5,
) -> LLMTeacher:
    """An LLM teacher for `task` talking to the OpenAI-compatible endpoint at `base_url`."""
    client = ChatClient(
        base_url,
        model,
        api_key,
        timeout=timeout,
        max_concurrency=max_concurrency,
        retries=retries,
        throttle=rate_limiter,
    )
    return LLMTeacher(
        task,
        client,
        examples=examples,
        cache=cache,
        budget=budget,
        prior_confidence=prior_confidence,
    )
