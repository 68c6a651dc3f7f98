"""The outcome ledger on a real Redis: exact counts when Kafka redelivers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from loopline.streams.state import Outcome, OutcomeLedger

pytestmark = pytest.mark.integration


def run(redis_url, scenario):
    async def main():
        client = aioredis.from_url(redis_url)
        try:
            ledger = OutcomeLedger(client, f"test-{uuid.uuid4().hex[:8]}.", "annotate")
            return await scenario(ledger)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_redelivered_offsets_are_not_counted_twice(redis_url):
    async def scenario(ledger):
        first = [Outcome("t", 0, o, "prediction") for o in range(10)]
        assert await ledger.record(first) == 10
        # After a crash the worker re-processes offsets 5..14: only 10..14 are new.
        again = [Outcome("t", 0, o, "prediction") for o in range(5, 15)]
        assert await ledger.record(again) == 5
        return await ledger.counts()

    assert run(redis_url, scenario) == {"prediction": 15}


def test_order_within_a_batch_does_not_matter(redis_url):
    async def scenario(ledger):
        batch = [Outcome("t", 0, 7, "deadletter")] + [
            Outcome("t", 0, o, "review") for o in range(7)
        ]
        batch.append(Outcome("t", 1, 0, "prediction", tags=("audit",)))
        assert await ledger.record(batch) == 9
        return await ledger.counts()

    assert run(redis_url, scenario) == {"audit": 1, "deadletter": 1, "prediction": 1, "review": 7}


def test_llm_tokens_are_counted_once_per_offset_and_by_minute(redis_url):
    async def scenario(ledger):
        batch = [
            Outcome("t", 0, 0, "prediction", tokens=120, minute=100),
            Outcome("t", 0, 1, "review", ("llm_disagrees",), tokens=80, minute=100),
            Outcome("t", 0, 2, "prediction", tokens=0, minute=101),  # from the LLM's cache
            Outcome("t", 1, 0, "prediction", tokens=50, minute=102),
        ]
        assert await ledger.record(batch) == 4
        assert await ledger.record(batch[1:]) == 0  # redelivered
        return await ledger.counts(), await ledger.tokens_by_minute()

    counts, by_minute = run(redis_url, scenario)
    assert counts["llm_tokens"] == 250
    assert by_minute == {100: 200, 102: 50}
