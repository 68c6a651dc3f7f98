"""The baseline `bench stream` compares workers with: a plain aiokafka loop doing the same
work.

getmany → decode → the same student, in-process → the same routing and output messages →
produce (acks=all) → wait for the acks → commit. No framework, no child process, one batch
at a time: what a hand-written Python consumer reaches on this machine, run as a process of
its own like a worker (`python -m loopline.streams.bench.pipe TASK_FILE MODEL_DIR`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from loopline.processors.students import load_student
from loopline.schemas import TaskConfig, TextIn, load_task
from loopline.streams.agents.annotate import STAGE, decide, suggestions_of
from loopline.streams.codec import decode_text
from loopline.streams.connections import aiokafka_options
from loopline.streams.outputs import decode_batch, outputs_for
from loopline.streams.settings import Settings


def group_id(task: TaskConfig) -> str:
    return f"{task.topics.prefix}plain-pipe"


def start(task_file: Path, model_dir: Path, log: Path) -> subprocess.Popen:
    """The pipe in a process of its own, as a worker runs."""
    return subprocess.Popen(
        [sys.executable, "-m", __name__, str(task_file), str(model_dir)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def run(settings: Settings, task: TaskConfig, model: Path) -> None:
    student = load_student(model, task, threads=settings.encoder_threads)
    llm_available = settings.llm_base_url is not None

    def decode(raw: bytes | None) -> TextIn:
        return decode_text(raw, task.max_text_chars)

    consumer = AIOKafkaConsumer(
        task.topic("texts"),
        **aiokafka_options(settings),
        group_id=group_id(task),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=settings.batch_size)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            valid, outputs, _ = decode_batch(records, decode, task.name, STAGE)
            annotations = student.predict([item.text for _, item in valid])
            for (_, item), annotation in zip(valid, annotations, strict=True):
                decision = decide(annotation, item, task.routing, llm_available=llm_available)
                suggestions = suggestions_of(annotation, student.version, task)
                outputs += outputs_for(item, suggestions, decision, task)
            acks = [
                await producer.send(task.topic(out.role), out.value, key=out.key.encode())
                for out in outputs
            ]
            await asyncio.gather(*acks)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    task_file, model_dir = sys.argv[1:3]
    asyncio.run(run(Settings(), load_task(Path(task_file)), Path(model_dir)))
