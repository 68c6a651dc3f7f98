"""The Faust app of one task: its consumer group, topics and agents.

All workers of a task share one consumer group (named after the topic prefix), so starting
another worker is all it takes to split the partitions of `texts` between them.
"""

from __future__ import annotations

import logging

import faust

from loopline.schemas import TaskConfig
from loopline.streams.settings import Settings
from loopline.streams.topics import TaskTopics, declare

log = logging.getLogger("loopline")


def group_id(task: TaskConfig) -> str:
    return f"{task.topics.prefix}workers"


def create_app(settings: Settings, task: TaskConfig) -> tuple[faust.App, TaskTopics]:
    datadir = settings.state_dir / "faust" / group_id(task)
    datadir.mkdir(parents=True, exist_ok=True)
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    app = faust.App(
        group_id(task),
        broker=brokers,
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=task.topics.partitions,
        topic_replication_factor=task.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Group joins wait session_timeout/2 for a dead member: keep failover quick.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_linger=0.005,
        producer_acks=-1,
    )
    return app, declare(app, task)


async def crash_loudly(app: faust.App, agent: str, exc: BaseException) -> None:
    """Stop the whole worker on a bug, instead of Faust's silent agent restart."""
    log.critical("agent %s failed with an unexpected error; stopping the worker", agent,
                 exc_info=exc)
    await app.crash(exc)
