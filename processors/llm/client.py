"""An async client for any OpenAI-compatible chat-completions endpoint.

It bounds requests in flight (a semaphore), retries 429 / 5xx / timeouts with jittered
exponential backoff (honouring `Retry-After`), and fails fast through a circuit breaker
while the server keeps failing. A server that is gone (connection refused or reset, twice in
a row: once may be a stale pooled connection) opens the breaker at once: its items go on
within moments, and only a slow server costs the timeout. Structured output is asked for with
`response_format: json_schema`; token log-probabilities with `logprobs` so answers get a
confidence. A server that rejects either option (HTTP 400 naming it) is asked again
without it, once, and the client remembers: the tolerant parser and a prior confidence
then take over.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from loopline.processors.llm.breaker import CircuitBreaker
from loopline.processors.llm.retry import Backoff, is_retryable_status, parse_retry_after
from loopline.schemas import LLMBadAnswer, LLMError, LLMUnavailable

Message = dict[str, str]
# What a server that is not there (refused, reset, closed mid-answer) looks like to httpx;
# timeouts are not among them: a slow server is not a dead one.
GONE = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
EXCERPT_CHARS = 300


class Usage(BaseModel):
    """Tokens one call (or many, added up) cost; `cached_tokens` came from the prefix cache."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            requests=self.requests + other.requests,
        )

    @classmethod
    def from_response(cls, usage: dict[str, Any] | None) -> Usage:
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            requests=1,
        )


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and the most likely alternatives."""

    token: bytes
    logprob: float
    alternatives: tuple[tuple[bytes, float], ...] = ()

    @classmethod
    def from_response(cls, item: dict[str, Any]) -> TokenLogprob:
        return cls(
            token=_token_bytes(item),
            logprob=float(item["logprob"]),
            alternatives=tuple(
                (_token_bytes(alt), float(alt["logprob"])) for alt in item.get("top_logprobs") or ()
            ),
        )


def _token_bytes(item: dict[str, Any]) -> bytes:
    raw = item.get("bytes")
    return bytes(raw) if raw is not None else str(item.get("token", "")).encode("utf-8")


@dataclass(frozen=True)
class Completion:
    """The answer to one chat request. `logprobs` is None when the server sent none."""

    text: str
    model: str
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class _Failure:
    """A retryable outcome of one attempt; `gone` when the server refused or dropped the
    connection (as opposed to answering with an error, or answering too slowly)."""

    reason: str
    retry_after_s: float | None = None
    gone: bool = False


class ChatClient:
    """Chat completions with bounded concurrency, retries and a circuit breaker.

    `throttle`, when given, is awaited before every HTTP request (a shared rate limit);
    `rng` and `sleep` are there so tests can watch the backoff without waiting for it.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_concurrency: int = 2,
        retries: int = 3,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        throttle: Callable[[], Awaitable[None]] | None = None,
        logprobs: bool = True,
        top_logprobs: int = 5,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker()
        self.top_logprobs = top_logprobs
        self.logprobs_supported = logprobs
        self.schema_supported = True
        self._throttle = throttle
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_concurrency),
        )

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
    ) -> Completion:
        """Ask once, retrying what is worth retrying; raise an LLMError when there is no answer."""
        failure: _Failure | None = None
        for attempt in range(self.retries + 1):
            if failure is not None and not failure.gone:
                await self._sleep(self._delay(attempt - 1, failure))
            if not self.breaker.allow():
                raise LLMUnavailable(
                    f"the LLM at {self.base_url} keeps failing; circuit open, next try in "
                    f"{self.breaker.retry_in():.0f} s. Items go to review meanwhile; check "
                    "the server."
                )
            outcome = await self._attempt(messages, schema, max_tokens)
            if isinstance(outcome, Completion):
                return outcome
            if outcome.gone and (attempt == self.retries or (failure is not None and failure.gone)):
                self.breaker.trip()
                raise LLMUnavailable(
                    f"the LLM at {self.base_url} is gone ({outcome.reason}); circuit open, next "
                    f"try in {self.breaker.retry_in():.0f} s. Items go to review meanwhile; "
                    "check that the server runs (LOOPLINE_LLM_BASE_URL)."
                )
            failure = outcome
        raise LLMUnavailable(
            f"the LLM at {self.base_url} gave no answer after {self.retries + 1} attempts: "
            f"{failure.reason if failure else 'no attempt made'}. Check that the server is up "
            "(LOOPLINE_LLM_BASE_URL) or raise LOOPLINE_LLM_TIMEOUT_S."
        )

    def _delay(self, retry: int, failure: _Failure) -> float:
        if (
            failure.retry_after_s is not None
            and failure.retry_after_s > self.backoff.max_retry_after_s
        ):
            raise LLMUnavailable(
                f"the LLM at {self.base_url} is rate-limited and asks to wait "
                f"{failure.retry_after_s:.0f} s (more than "
                f"{self.backoff.max_retry_after_s:.0f} s): lower the request rate or raise "
                "the provider's limit"
            )
        return self.backoff.delay(retry, failure.retry_after_s, self._rng)

    async def _attempt(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int
    ) -> Completion | _Failure:
        """One HTTP request, told to the breaker: an answer, a retryable failure, or a raise."""
        settled = False
        try:
            async with self._semaphore:
                if self._throttle is not None:
                    await self._throttle()
                try:
                    outcome = await self._post(messages, schema, max_tokens)
                except LLMError:
                    self.breaker.record_success()  # the server answered; the request was bad
                    settled = True
                    raise
            if isinstance(outcome, _Failure):
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            settled = True
            return outcome
        finally:
            if not settled:
                self.breaker.record_abandoned()

    async def _post(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int
    ) -> Completion | _Failure:
        while True:
            payload = self._payload(messages, schema, max_tokens)
            try:
                response = await self._http.post("chat/completions", json=payload)
            except httpx.TimeoutException:
                return _Failure(f"no answer within {self.timeout:g} s")
            except GONE as exc:
                return _Failure(f"cannot reach {self.base_url}: {exc!r}", gone=True)
            except httpx.TransportError as exc:
                return _Failure(f"cannot reach {self.base_url}: {exc!r}")
            if response.status_code == 400 and self._drop_rejected_option(response.text, payload):
                continue
            if is_retryable_status(response.status_code):
                return _Failure(
                    f"HTTP {response.status_code}: {_excerpt(response.text)}",
                    parse_retry_after(response.headers.get("retry-after")),
                )
            if response.status_code >= 400:
                raise _request_error(self.base_url, self.model, response)
            return _completion(response, self.model)

    def _payload(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        if schema is not None and self.schema_supported:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": True, "schema": schema},
            }
        if self.logprobs_supported:
            payload["logprobs"] = True
            payload["top_logprobs"] = self.top_logprobs
        return payload

    def _drop_rejected_option(self, body: str, payload: dict[str, Any]) -> bool:
        """Turn off an option this server refuses (it names it in a 400); True to ask again."""
        body = body.lower()
        if "logprobs" in payload and "logprob" in body:
            self.logprobs_supported = False
            return True
        if "response_format" in payload and ("response_format" in body or "json_schema" in body):
            self.schema_supported = False
            return True
        return False


def _completion(response: httpx.Response, model: str) -> Completion:
    try:
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMBadAnswer(
            f"the LLM server sent a reply that is not a chat completion: {_excerpt(response.text)}"
        ) from None
    if not isinstance(text, str):
        raise LLMBadAnswer(f"the LLM answered without text content: {_excerpt(response.text)}")
    content = (choice.get("logprobs") or {}).get("content")
    return Completion(
        text=text,
        model=str(data.get("model") or model),
        usage=Usage.from_response(data.get("usage")),
        logprobs=tuple(TokenLogprob.from_response(t) for t in content) if content else None,
        finish_reason=choice.get("finish_reason"),
    )


def _request_error(base_url: str, model: str, response: httpx.Response) -> LLMError:
    status, body = response.status_code, _excerpt(response.text)
    if status in (401, 403):
        return LLMUnavailable(
            f"the LLM at {base_url} refused the API key (HTTP {status}): set LOOPLINE_LLM_API_KEY"
        )
    if status == 404:
        return LLMUnavailable(
            f"HTTP 404 from {base_url}/chat/completions for model {model!r}: the base URL should "
            f"end in /v1 and the model must exist (LOOPLINE_LLM_MODEL). Server said: {body}"
        )
    return LLMError(f"the LLM at {base_url} rejected the request (HTTP {status}): {body}")


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
