"""The outcome ledger's runs (pure) and its behaviour while Redis cannot be reached."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from loopline.streams.local.services import free_port
from loopline.streams.state import Outcome, OutcomeLedger, Run, runs_of


def test_consecutive_offsets_with_the_same_outcome_become_one_run():
    outcomes = [Outcome("t", 0, o, "prediction") for o in (3, 1, 2)] + [
        Outcome("t", 0, 4, "review", ("audit",)),
        Outcome("t", 1, 0, "prediction"),
    ]
    assert runs_of(outcomes) == [
        Run("t:0", 1, 3, "prediction"),
        Run("t:0", 4, 4, "review,audit"),
        Run("t:1", 0, 0, "prediction"),
    ]


def test_an_offset_seen_again_is_kept_once():
    pending = runs_of([Outcome("t", 0, o, "prediction") for o in range(10)])
    again = [Outcome("t", 0, o, "prediction") for o in range(5, 15)]
    assert runs_of(again, pending) == [Run("t:0", 0, 14, "prediction")]


def test_while_redis_is_unreachable_outcomes_are_kept_and_tried_again_later():
    now = [0.0]

    async def scenario():
        # A port nobody listens on: connection refused, as when Redis is stopped.
        client = aioredis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", retry=Retry(NoBackoff(), retries=0)
        )
        ledger = OutcomeLedger(client, "t.", "annotate", retry_s=1.0, clock=lambda: now[0])
        first = await ledger.record([Outcome("t", 0, o, "prediction") for o in range(100)])
        second = await ledger.record([Outcome("t", 0, o, "review") for o in range(100, 150)])
        now[0] = 2.0
        third = await ledger.record([Outcome("t", 0, 150, "review")])
        await client.aclose()
        return first, second, third, ledger.pending

    assert asyncio.run(scenario()) == (0, 0, 0, 2)
