"""The chat client against a real loopback server that fails on purpose."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from loopline.processors.llm.breaker import CircuitBreaker
from loopline.processors.llm.client import ChatClient
from loopline.processors.llm.retry import Backoff
from loopline.schemas import LLMBadAnswer, LLMError, LLMUnavailable
from tests.fixtures.llm import FakeLLM, Reply, chat_reply

MESSAGES = [{"role": "user", "content": "Text: hello"}]


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(url: str, **kwargs) -> ChatClient:
    kwargs.setdefault("sleep", Sleeps())
    return ChatClient(url, "fake-model", timeout=kwargs.pop("timeout", 5.0), **kwargs)


def run(coroutine):
    return asyncio.run(coroutine)


async def complete(chat: ChatClient, **kwargs):
    async with chat:
        return await chat.complete(MESSAGES, **kwargs)


def test_5xx_is_retried_until_an_answer(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(500, "boom"), Reply(503, "busy"), chat_reply('{"label": "a"}'))
    sleeps = Sleeps()
    completion = run(complete(client(fake_llm.base_url, retries=3, sleep=sleeps)))
    assert completion.text == '{"label": "a"}'
    assert len(fake_llm.requests) == 3
    assert len(sleeps.delays) == 2
    assert completion.usage.prompt_tokens == 100 and completion.usage.cached_tokens == 90


def test_retries_run_out_with_llm_unavailable_naming_the_last_failure(fake_llm: FakeLLM) -> None:
    fake_llm.reply(*[Reply(502, "bad gateway")] * 3)
    with pytest.raises(LLMUnavailable, match="after 3 attempts: HTTP 502: bad gateway"):
        run(complete(client(fake_llm.base_url, retries=2)))
    assert len(fake_llm.requests) == 3


def test_429_waits_at_least_retry_after(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(429, "slow down", {"Retry-After": "7"}), chat_reply("{}"))
    sleeps = Sleeps()
    run(complete(client(fake_llm.base_url, sleep=sleeps, backoff=Backoff(base_s=0.1))))
    assert sleeps.delays == [7.0]


def test_a_retry_after_too_long_to_wait_fails_at_once(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(429, "quota", {"Retry-After": "3600"}))
    with pytest.raises(LLMUnavailable, match="asks to wait 3600 s"):
        run(complete(client(fake_llm.base_url, retries=3)))
    assert len(fake_llm.requests) == 1


def test_a_hanging_server_times_out_and_is_retried(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(delay_s=5), Reply(delay_s=5))
    with pytest.raises(LLMUnavailable, match="no answer within 0.3 s"):
        run(complete(client(fake_llm.base_url, timeout=0.3, retries=1)))
    assert len(fake_llm.requests) == 2


def test_nobody_listening_is_llm_unavailable() -> None:
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        run(complete(client(f"http://127.0.0.1:{closed_port()}/v1", retries=1)))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Resetting:
    """A server that accepts each connection and resets it at once (a server that crashed)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()


@pytest.mark.parametrize("server", ["refused", "reset"])
def test_a_server_that_is_gone_opens_the_breaker_at_once_without_backoff(server) -> None:
    resetting = Resetting() if server == "reset" else None
    url = resetting.base_url if resetting else f"http://127.0.0.1:{closed_port()}/v1"
    sleeps = Sleeps()
    chat = client(url, retries=3, sleep=sleeps, breaker=CircuitBreaker(failure_threshold=5))

    async def scenario() -> list[str]:
        outcomes = []
        async with chat:
            for _ in range(3):
                try:
                    await chat.complete(MESSAGES)
                except LLMUnavailable as error:
                    outcomes.append(str(error))
        return outcomes

    started = time.monotonic()
    first, second, third = run(scenario())
    assert time.monotonic() - started < 2.0
    assert "is gone" in first and "circuit open" in first
    assert "circuit open" in second and "circuit open" in third
    assert sleeps.delays == [] and chat.breaker.state == "open"
    if resetting:
        assert resetting.accepted == 2  # tried twice (a stale connection gets one more go)
        resetting.sock.close()


def test_the_breaker_opens_and_then_fails_fast_without_a_request(fake_llm: FakeLLM) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30, clock=lambda: now[0])
    chat = client(fake_llm.base_url, retries=0, breaker=breaker)
    fake_llm.reply(Reply(500, "down"), Reply(500, "down"), chat_reply("{}"))

    async def scenario() -> list[str]:
        outcomes = []
        async with chat:
            for _ in range(3):
                try:
                    await chat.complete(MESSAGES)
                    outcomes.append("answer")
                except LLMUnavailable as error:
                    outcomes.append(str(error))
            now[0] += 30
            await chat.complete(MESSAGES)  # the half-open probe gets the scripted answer
            outcomes.append(breaker.state)
        return outcomes

    outcomes = run(scenario())
    assert "HTTP 500" in outcomes[0] and "HTTP 500" in outcomes[1]
    assert "circuit open, next try in 30 s" in outcomes[2]
    assert outcomes[3] == "closed"
    assert len(fake_llm.requests) == 3  # the refused call sent nothing


def test_a_server_that_refuses_logprobs_is_asked_again_without(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(400, {"error": "logprobs is not supported"}), chat_reply("{}"))
    chat = client(fake_llm.base_url)
    completion = run(complete(chat, schema={"type": "object"}))
    first, second = fake_llm.requests
    assert first["logprobs"] is True and "logprobs" not in second
    assert second["response_format"]["type"] == "json_schema"
    assert completion.logprobs is None and not chat.logprobs_supported


def test_wrong_key_and_wrong_url_are_not_retried(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(401, "no"), Reply(404, "not found"), Reply(422, "bad request"))
    with pytest.raises(LLMUnavailable, match="LOOPLINE_LLM_API_KEY"):
        run(complete(client(fake_llm.base_url)))
    with pytest.raises(LLMUnavailable, match="should end in /v1"):
        run(complete(client(fake_llm.base_url)))
    with pytest.raises(LLMError, match="rejected the request \\(HTTP 422\\)"):
        run(complete(client(fake_llm.base_url)))
    assert len(fake_llm.requests) == 3


def test_a_reply_that_is_no_chat_completion_is_a_bad_answer(fake_llm: FakeLLM) -> None:
    fake_llm.reply(Reply(200, "<html>gateway</html>"), Reply(200, {"choices": []}))
    with pytest.raises(LLMBadAnswer, match="gateway"):
        run(complete(client(fake_llm.base_url)))
    with pytest.raises(LLMBadAnswer, match="not a chat completion"):
        run(complete(client(fake_llm.base_url)))


def test_the_request_carries_schema_logprobs_and_key(fake_llm: FakeLLM) -> None:
    fake_llm.reply(chat_reply("{}"))
    chat = ChatClient(fake_llm.base_url + "/", "m1", "secret", top_logprobs=3)
    run(complete(chat, schema={"type": "object"}, max_tokens=9))
    (payload,) = fake_llm.requests
    assert payload["model"] == "m1" and payload["max_tokens"] == 9
    assert payload["temperature"] == 0.0
    assert payload["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert payload["logprobs"] is True and payload["top_logprobs"] == 3


def test_no_more_than_max_concurrency_requests_are_in_flight(fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda payload: Reply(200, chat_reply("{}").body, delay_s=0.2)
    chat = client(fake_llm.base_url, max_concurrency=2)
    in_flight = []

    async def scenario() -> None:
        async with chat:
            calls = [asyncio.create_task(chat.complete(MESSAGES)) for _ in range(6)]
            await asyncio.sleep(0.1)
            in_flight.append(len(fake_llm.requests))
            await asyncio.gather(*calls)

    run(scenario())
    assert in_flight == [2]
    assert len(fake_llm.requests) == 6
