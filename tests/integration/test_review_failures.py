"""The review service under concurrency and failures: two instances on one Redis, Redis
flushed, the service SIGKILLed mid-answers, Kafka unresponsive."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter, defaultdict
from urllib.parse import urlparse

import pytest
import redis

from loopline.streams.review.client import ReviewAPIError, ReviewClient
from tests.integration.reviewing import (
    ServiceProcess,
    add_token,
    pid_listening_on,
)

pytestmark = pytest.mark.integration


async def reviewer_loop(url, token, task, leased_log, acked, stop_after=None, n=2):
    """Take and answer items until the queue is empty; log every lease and acknowledged id."""
    async with ReviewClient(url, token, task, timeout_s=60) as client:
        while True:
            try:
                batch = await client.next(n=n)
            except ReviewAPIError as error:
                if error.status == 503:
                    await asyncio.sleep(0.5)
                    continue
                raise
            if not batch:
                return
            for leased in batch:
                leased_log.append(leased.id)
                label = leased.item.item.meta["gold"]
                await client.answer(leased, labels=[label])
                acked.append(leased.id)
                if stop_after is not None and len(acked) >= stop_after:
                    return


def by_id(pairs):
    grouped = defaultdict(set)
    for key, value in pairs:
        grouped[key].add(repr(sorted(value.items())))
    return grouped


def test_two_instances_never_lease_one_item_twice(review, tmp_path):
    r = review(60)
    second = ServiceProcess(r.task_file, r.env, tmp_path / "second.log").start()
    try:
        tokens = [add_token(r.env, f"rev{i}-{r.name}") for i in range(8)]
        leased, acked = [], []

        async def everyone():
            await asyncio.gather(
                *(
                    reviewer_loop(
                        (r.service.url, second.url)[i % 2], token, r.task.name, leased, acked
                    )
                    for i, token in enumerate(tokens)
                )
            )

        asyncio.run(everyone())
    finally:
        second.stop()
    twice = [item for item, count in Counter(leased).items() if count > 1]
    assert twice == [] and len(leased) == 60
    assert sorted(acked) == sorted(f"item-{i}" for i in range(60))
    corrections = r.topic("corrections")
    assert sorted(k for k, _ in corrections) == sorted(acked)


def test_redis_flushed_the_queue_is_rebuilt_without_decided_items(review, redis_url):
    r = review(10)
    api = r.api()
    answered = []
    for leased in api.next(n=4):
        assert api.answer(leased, labels=[leased["item"]["item"]["meta"]["gold"]])[0] == 201
        answered.append(leased["item"]["id"])
    held = api.next(n=1)[0]["item"]["id"]  # its lease is lost with Redis
    redis.Redis.from_url(redis_url).flushall()

    deadline = time.monotonic() + 60
    while True:
        status, body = api.get("queue/next", n=10)
        if status == 200:
            break
        assert status == 503 and "rebuilt" in body["detail"], body
        assert time.monotonic() < deadline
        time.sleep(0.3)
    served = sorted(leased["item"]["id"] for leased in body["items"])
    assert served == sorted(f"item-{i}" for i in range(10) if f"item-{i}" not in answered)
    assert held in served
    stats = api.get("stats")[1]
    assert stats["answered"] == 4 and stats["decided"] == 4
    assert stats["reviewers"][r.name]["answers"] == 4


def test_sigkill_mid_answers_loses_nothing_acknowledged(review, tmp_path):
    r = review(40, review={"lease_ttl_s": 4})
    tokens = [add_token(r.env, f"k{i}-{r.name}") for i in range(4)]
    leased, acked = [], []

    async def until_killed():
        async def kill_after_some():
            while len(acked) < 12:
                await asyncio.sleep(0.01)
            r.service.kill()

        loops = [
            reviewer_loop(r.service.url, token, r.task.name, leased, acked) for token in tokens
        ]
        await asyncio.gather(kill_after_some(), *loops, return_exceptions=True)

    asyncio.run(until_killed())
    acked_before = list(acked)
    assert len(acked_before) >= 12
    restarted = ServiceProcess(r.task_file, r.env, tmp_path / "restarted.log").start()
    r.service = restarted

    # leases the killed service held come back after their TTL; half-written answers are
    # finished by the outbox sweep; the reviewers carry on until nothing is left
    async def the_rest():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            await asyncio.gather(
                *(reviewer_loop(restarted.url, t, r.task.name, leased, acked) for t in tokens)
            )
            stats = r.api().get("stats")[1]
            if stats["decided"] == 40:
                return
            await asyncio.sleep(1.0)
        raise AssertionError(f"not every item was decided: {stats}")

    try:
        asyncio.run(the_rest())
    finally:
        restarted.stop()
    corrections = by_id(r.topic("corrections"))
    answers = by_id(r.topic("answers"))
    assert set(corrections) == {f"item-{i}" for i in range(40)}
    for item in acked_before:
        assert item in answers and item in corrections
    different = {item: versions for item, versions in corrections.items() if len(versions) > 1}
    assert different == {}, "an item has two gold labels with different content"
    assert all(len(versions) == 1 for versions in answers.values())


def test_kafka_unresponsive_answers_503_and_a_retry_writes_once(review, kafka_bootstrap):
    r = review(3, env={"LOOPLINE_REVIEW_WRITE_TIMEOUT_S": "3"})
    api = r.api()
    leased = api.next(n=1)[0]
    label = leased["item"]["item"]["meta"]["gold"]
    broker = pid_listening_on(urlparse(f"kafka://{kafka_bootstrap}").port)
    os.kill(broker, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = api.answer(leased, labels=[label])
        assert status == 503, body
        assert "Kafka did not acknowledge" in body["detail"] and "retry" in body["detail"]
        assert time.monotonic() - started < 20
    finally:
        os.kill(broker, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while (status := api.answer(leased, labels=[label])[0]) == 503:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == 201
    corrections = [v for k, v in r.topic("corrections") if k == leased["item"]["id"]]
    assert corrections and all(c == corrections[0] for c in corrections)
    assert len({repr(v) for k, v in r.topic("answers")}) == 1
