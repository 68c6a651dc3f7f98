"""Existing topics must suit their roles; a task may read an existing input topic."""

from __future__ import annotations

import pytest

from loopline.schemas import TaskConfig
from loopline.streams.topics import TopicShape, topic_problems

LABELS = {"a": "first", "b": "second"}


def task(**topics) -> TaskConfig:
    return TaskConfig(
        name="t", kind="textcat", labels=LABELS, topics={"prefix": "p.", "partitions": 4, **topics}
    )


def test_a_named_input_topic_replaces_prefix_texts_only():
    named = task(input="orders.text")
    assert named.topic("texts") == "orders.text"
    assert named.topic("predictions") == "p.predictions"
    assert task().topic("texts") == "p.texts"


def test_topics_that_suit_their_roles_have_no_problems():
    shapes = {
        "p.texts": TopicShape(6, "delete"),
        "p.predictions": TopicShape(4, "compact,delete"),
        "p.corrections": TopicShape(4, "compact"),
        "p.models": TopicShape(4, "compact"),
    }
    assert topic_problems(task(), shapes) == []


def test_too_few_partitions_says_how_to_add_them_or_change_the_task():
    [problem] = topic_problems(task(input="orders.text"), {"orders.text": TopicShape(2, "delete")})
    assert "orders.text has 2 partition(s), the task asks for 4" in problem
    assert "--partitions 4" in problem and "topics.partitions: 2" in problem


@pytest.mark.parametrize("policy", ["delete", "compact,delete"])
def test_corrections_and_models_must_be_compacted_only(policy):
    problems = topic_problems(
        task(), {"p.corrections": TopicShape(4, policy), "p.models": TopicShape(4, policy)}
    )
    assert len(problems) == 2
    assert all("cleanup.policy=compact" in problem for problem in problems)


def test_a_compacted_input_topic_is_refused():
    [problem] = topic_problems(task(), {"p.texts": TopicShape(4, "compact")})
    assert "compaction would drop texts messages" in problem
    assert "cleanup.policy=delete" in problem


def test_an_input_topic_name_kafka_would_refuse_is_a_config_error():
    with pytest.raises(ValueError):
        task(input="no spaces allowed")
