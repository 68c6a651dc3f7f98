"""The LLM teacher as a Processor, against a scripted loopback server."""

from __future__ import annotations

import asyncio
import json
import math
import socket

import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loopline.processors.llm import (
    ChatClient,
    Example,
    LLMAnswer,
    LLMTeacher,
    ResponseCache,
    TokenBudget,
)
from loopline.processors.protocol import Processor
from loopline.processors.registry import make
from loopline.schemas import Annotation, LLMBadAnswer, LLMError, LLMUnavailable, TaskConfig
from tests.fixtures.llm import FakeLLM, Reply, chat_reply, last_user_text, token

LABELS = {"PlayMusic": "Play a song now.", "GetWeather": "Ask about the weather."}


def task(kind: str = "textcat", labels: dict[str, str] = LABELS) -> TaskConfig:
    return TaskConfig(name="demo", kind=kind, labels=labels, topics={"prefix": "t."})


def teacher(fake: FakeLLM, kind: str = "textcat", **kwargs) -> LLMTeacher:
    labels = kwargs.pop("labels", LABELS)
    client = ChatClient(fake.base_url, "fake-model", retries=kwargs.pop("retries", 0))
    return LLMTeacher(task(kind, labels), client, **kwargs)


def answer_all(llm: LLMTeacher, texts: list[str]) -> list[LLMAnswer | LLMError]:
    async def go():
        try:
            return await llm.answer(texts)
        finally:
            await llm.aclose()

    return asyncio.run(go())


def weather_tokens() -> list[dict]:
    return [
        token('{"label": "', 0.0),
        token("Get", -0.2, ("Play", -1.8)),
        token("Weather", 0.0),
        token('"}', 0.0),
    ]


def test_an_answer_records_model_prompt_usage_and_a_logprob_confidence(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('{"label": "GetWeather"}', logprobs=weather_tokens()))
    llm = teacher(fake_llm)
    (answer,) = answer_all(llm, ["will it rain"])
    assert isinstance(answer, LLMAnswer)
    get, play = math.exp(-0.2), math.exp(-1.8)
    assert answer.annotation.labels == ["GetWeather"]
    assert answer.annotation.confidence == pytest.approx(get / (get + play))
    assert answer.annotation.scores == {"GetWeather": answer.annotation.confidence}
    assert answer.confidence_from == "logprobs"
    assert (answer.model, answer.prompt_version) == ("fake-model", "textcat.v1")
    assert llm.version == "fake-model/textcat.v1"
    assert answer.usage.total_tokens == 110 and llm.usage.total_tokens == 110
    assert last_user_text(fake_llm.requests[0]) == "will it rain"


def test_without_logprobs_the_confidence_is_the_prior(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('```json\n{"label": "PlayMusic"}\n```'))
    (answer,) = answer_all(teacher(fake_llm, prior_confidence=0.8), ["play jazz"])
    assert answer.annotation.confidence == 0.8
    assert answer.confidence_from == "prior"


def test_one_failing_item_does_not_fail_the_others(fake_llm: FakeLLM) -> None:
    def respond(payload: dict) -> Reply:
        if last_user_text(payload) == "boom":
            return Reply(500, "exploded")
        return chat_reply('{"label": "PlayMusic"}')

    fake_llm.responder = respond
    results = asyncio.run(_annotate(teacher(fake_llm), ["play a", "boom", "play b"]))
    assert isinstance(results[0], Annotation) and isinstance(results[2], Annotation)
    assert isinstance(results[1], LLMUnavailable) and "exploded" in str(results[1])
    assert results[1].code == "llm_unavailable"


async def _annotate(llm: LLMTeacher, texts: list[str]):
    try:
        return await llm.annotate(texts)
    finally:
        await llm.aclose()


def test_an_unreadable_answer_is_asked_once_more_then_refused(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply("I think it is music"), chat_reply("Music, definitely"))
    llm = teacher(fake_llm)
    (result,) = answer_all(llm, ["play jazz"])
    assert isinstance(result, LLMBadAnswer)
    assert "Music, definitely" in str(result)
    assert len(fake_llm.requests) == 2
    assert llm.usage.requests == 2  # failed answers still cost tokens


def test_a_label_off_the_schema_is_refused_and_a_second_try_may_save_it(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('{"label": "Dance"}'), chat_reply('{"label": "PlayMusic"}'))
    (answer,) = answer_all(teacher(fake_llm), ["play jazz"])
    assert answer.annotation.labels == ["PlayMusic"]
    assert answer.usage.requests == 2
    fake_llm.reply(chat_reply('{"label": "Dance"}'))
    (refused,) = answer_all(teacher(fake_llm, bad_answer_retries=0), ["dance"])
    assert isinstance(refused, LLMBadAnswer) and "'Dance'" in str(refused)


def test_ner_spans_are_placed_in_the_text_and_drops_counted(fake_llm: FakeLLM) -> None:
    entities = [
        {"text": "Ann", "label": "person"},
        {"text": "Rome", "label": "location"},
        {"text": "Atlantis", "label": "location"},
        {"text": "Ann", "label": "robot"},
    ]
    fake_llm.reply(chat_reply(json.dumps({"entities": entities})))
    labels = {"person": "People.", "location": "Places."}
    (answer,) = answer_all(teacher(fake_llm, "ner", labels=labels), ["Ann flew to Rome"])
    spans = [(s.start, s.end, s.label) for s in answer.annotation.spans]
    assert spans == [(0, 3, "person"), (12, 16, "location")]
    assert answer.dropped == {"not_found": 1, "rejected": 1}
    assert answer.prompt_version == "ner.v1"


def test_an_answer_cut_off_at_max_tokens_says_so(fake_llm: FakeLLM) -> None:
    fake_llm.reply(
        chat_reply('{"entities": [{"text": "Ann", "label": "per', finish_reason="length")
    )
    labels = {"person": "People."}
    (result,) = answer_all(teacher(fake_llm, "ner", labels=labels, bad_answer_retries=0), ["Ann"])
    assert isinstance(result, LLMBadAnswer)
    assert "cut off at 35 tokens" in str(result)


def test_multilabel_answers_carry_every_label(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('{"labels": ["GetWeather", "PlayMusic"]}'))
    (answer,) = answer_all(teacher(fake_llm, "textcat_multilabel"), ["rain songs"])
    assert answer.annotation.labels == ["GetWeather", "PlayMusic"]


def test_examples_are_shown_before_the_item(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('{"label": "PlayMusic"}'))
    llm = teacher(fake_llm)
    llm.use_examples([Example("is it sunny", labels=("GetWeather",))])
    answer_all(llm, ["play jazz"])
    contents = [m["content"] for m in fake_llm.requests[0]["messages"]]
    assert contents[1:] == ["Text: is it sunny", '{"label": "GetWeather"}', "Text: play jazz"]


def unreachable_redis() -> Redis:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def test_a_cache_whose_redis_is_down_only_costs_the_cache(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply('{"label": "PlayMusic"}'))
    llm = teacher(fake_llm, cache=ResponseCache(unreachable_redis(), "demo"))
    (answer,) = answer_all(llm, ["play jazz"])
    assert answer.annotation.labels == ["PlayMusic"] and not answer.cached


def test_a_budget_that_cannot_be_checked_refuses_the_call(fake_llm: FakeLLM) -> None:
    budget = TokenBudget(unreachable_redis(), "demo", tokens_per_day=1000)
    llm = teacher(fake_llm, budget=budget)
    (result,) = answer_all(llm, ["play jazz"])
    assert isinstance(result, LLMError) and "token budget" in str(result)
    assert fake_llm.requests == []


def test_the_registered_factory_builds_a_processor(fake_llm: FakeLLM) -> None:
    llm = make(
        "loopline.LLMTeacher.v1",
        task=task(),
        base_url=fake_llm.base_url,
        model="m",
        timeout=5.0,
        max_concurrency=3,
        retries=1,
        examples=[Example("play jazz", labels=("PlayMusic",))],
    )
    assert isinstance(llm, Processor)
    assert llm.source == "llm" and llm.version == "m/textcat.v1"
    assert llm.client.max_concurrency == 3 and llm.client.retries == 1
    asyncio.run(llm.aclose())
