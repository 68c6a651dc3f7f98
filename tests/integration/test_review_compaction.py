"""Gold labels survive log compaction of `corrections`, even when the LLM answers the same
id later: the broker's cleaner is made to run, and we wait until it has."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from loopline.processors.llm.client import Usage
from loopline.processors.llm.teacher import LLMAnswer
from loopline.schemas import Annotation, Correction, RoutedItem, load_task
from loopline.streams.agents.teach import teach_outputs
from loopline.streams.codec import encode
from tests.integration.reviewing import gold_label, records
from tests.integration.streaming import write_task

pytestmark = pytest.mark.integration

# Roll a segment every 100 ms and clean anything dirty at once; the cleaner itself wakes up
# every log.cleaner.backoff.ms (15 s by default) on the broker.
AGGRESSIVE = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


def test_a_later_silver_answer_never_replaces_a_gold_label(
    review,
    kafka_bootstrap,
    tmp_path,
    unique_prefix,
):
    # One partition, so that the control key below shares the gold label's log.
    one_partition = {"partitions": 1}
    task_file = write_task(tmp_path, unique_prefix, topics=one_partition)
    topic = load_task(task_file).topic("corrections")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1, topic_configs=AGGRESSIVE)])
    admin.close()

    r = review(1, topics=one_partition)
    api = r.api()
    leased = api.next()[0]
    gold = gold_label(leased)
    assert api.answer(leased, labels=[gold])[0] == 201  # the human label, keyed by the id

    # later, the teach agent's LLM answers the same item (same text, same id) differently
    routed = RoutedItem.model_validate(leased["item"])
    wrong = next(label for label in r.task.labels if label != gold)
    answer = LLMAnswer(
        annotation=Annotation(labels=[wrong], scores={wrong: 0.9}, confidence=0.9),
        model="qwen",
        prompt_version="v1",
        usage=Usage(prompt_tokens=1, completion_tokens=1),
        confidence_from="prior",
        raw="{}",
    )
    outputs, _ = teach_outputs(routed, answer, r.task, datetime.now(UTC))
    silver = next(out for out in outputs if out.role == "corrections")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(topic, key=silver.key.encode(), value=encode(silver.message)).get(30)

    # a control key written twice: once the first copy is gone, the cleaner has run
    control = Correction(
        id="control", task=r.task.name, text="x", reviewer="ana", time=datetime.now(UTC)
    )
    for labels in (["first"], ["second"]):
        copy = control.model_copy(update={"labels": labels})
        producer.send(topic, key=copy.key.encode(), value=encode(copy)).get(30)
    deadline = time.monotonic() + 120
    while True:
        time.sleep(1.0)  # a new record rolls the segment, so the ones before become cleanable
        producer.send(topic, key=b"filler", value=encode(control)).get(30)
        kept = records(kafka_bootstrap, r.task, "corrections")
        control_copies = [v["labels"] for k, v in kept if k == "control"]
        if control_copies == [["second"]]:
            break
        assert time.monotonic() < deadline, f"the log cleaner did not run: {control_copies}"
    producer.close()

    by_key = {key: value for key, value in kept}
    assert by_key[routed.id]["source"] == "human" and by_key[routed.id]["labels"] == [gold]
    assert by_key[silver.key]["source"] == "llm" and by_key[silver.key]["labels"] == [wrong]
    assert silver.key != routed.id
