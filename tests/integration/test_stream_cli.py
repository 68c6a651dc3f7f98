"""`loopline produce`, `consume` and `stats` as a user runs them, on a real Kafka and Redis."""

from __future__ import annotations

import json

import pytest

from loopline.schemas import TextIn, content_id, load_task

from .streaming import run_cli, service_env, write_task

pytestmark = pytest.mark.integration


def test_produce_then_consume_round_trip(kafka_bootstrap, redis_url, tmp_path, unique_prefix):
    task_file = write_task(tmp_path, unique_prefix)
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"text": "my card has not arrived", "label": "card_arrival"}\n'
        '{"id": "t-2", "text": "top up failed", "meta": {"ticket": 9}}\n'
        "\n"
        "this line is not JSON\n"
    )
    produced = run_cli("produce", "--task", str(task_file), str(data), env=env)
    assert produced.returncode == 1, "a rejected line makes the exit code say so"
    assert "in.jsonl:4" in produced.stderr and "--plain" in produced.stderr
    assert "sent 2 texts" in produced.stderr

    plain = run_cli(
        "produce", "--task", str(task_file), "--plain", "-", env=env, stdin="raw text from stdin\n"
    )
    assert plain.returncode == 0, plain.stderr

    consumed = run_cli(
        "consume",
        "--task",
        str(task_file),
        "--topic",
        "texts",
        "--from-beginning",
        "--max",
        "3",
        "--timeout",
        "10",
        env=env,
    )
    assert consumed.returncode == 0, consumed.stderr
    items = [TextIn.model_validate_json(line) for line in consumed.stdout.splitlines()]
    assert {item.text for item in items} == {
        "my card has not arrived",
        "top up failed",
        "raw text from stdin",
    }
    by_text = {item.text: item for item in items}
    assert by_text["my card has not arrived"].id == content_id("my card has not arrived")
    assert by_text["top up failed"].id == "t-2" and by_text["top up failed"].meta == {"ticket": 9}


def test_stats_on_a_task_with_no_worker_yet(kafka_bootstrap, redis_url, tmp_path, unique_prefix):
    task_file = write_task(tmp_path, unique_prefix)
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    result = run_cli("stats", "--task", str(task_file), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"annotate": {}, "teach": {}}
    assert load_task(task_file).topics.prefix == f"{unique_prefix}."
