"""`loopline review token | export | import` as a user runs them."""

from __future__ import annotations

import json

import pytest

from tests.integration.reviewing import review_items
from tests.integration.streaming import run_cli

pytestmark = pytest.mark.integration


def test_tokens_export_and_idempotent_import(review, tmp_path):
    r = review(5)
    added = run_cli("review", "token", "add", f"zoe-{r.name}", "--role", "admin", env=r.env)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("llr_") and len(token) > 40
    listed = run_cli("review", "token", "list", env=r.env)
    assert f"zoe-{r.name}" in listed.stdout and "admin" in listed.stdout
    assert token not in listed.stdout
    missing = run_cli("review", "token", "revoke", "nobody-at-all", env=r.env)
    assert missing.returncode == 2 and "no token for reviewer 'nobody-at-all'" in missing.stderr

    leased = r.api().next()[0]  # one item is with a reviewer: still pending, still exported
    exported_file = tmp_path / "pending.jsonl"
    exported = run_cli(
        "review", "export", "--task", str(r.task_file), str(exported_file), env=r.env
    )
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported_file.read_text().splitlines()]
    assert sorted(line["meta"]["id"] for line in lines) == sorted(
        item.id for item in review_items(r.task, 5) if item.id != leased["item"]["id"]
    )
    first = lines[0]
    assert len(first["options"]) == 77 and first["accept"]

    # answers from elsewhere: three good lines, a bad label, a broken line
    answers = []
    for line in lines[:3]:
        gold = line["meta"]["gold"]
        answers.append(json.dumps({**line, "accept": [gold], "answer": "accept"}))
    answers.append(json.dumps({**lines[3], "accept": ["not_a_label"], "answer": "accept"}))
    answers.append("{broken")
    answers_file = tmp_path / "answers.jsonl"
    answers_file.write_text("\n".join(answers) + "\n")
    args = (
        "review",
        "import",
        "--task",
        str(r.task_file),
        str(answers_file),
        "--reviewer",
        "vendor",
    )
    imported = run_cli(*args, env=r.env)
    assert imported.returncode == 1
    assert f"{answers_file}:4: unknown label 'not_a_label'" in imported.stderr
    assert f"{answers_file}:5: not JSON" in imported.stderr
    assert "imported 3 answers" in imported.stderr
    assert len(r.topic("answers")) == 3 and len(r.topic("corrections")) == 3

    again = run_cli(*args, env=r.env)
    assert "imported 0 answers" in again.stderr and "3 were there already" in again.stderr
    assert len(r.topic("answers")) == 3 and len(r.topic("corrections")) == 3
    assert {v["reviewer"] for _, v in r.topic("corrections")} == {"vendor"}
    # imported items are decided: only the line that was rejected is left to serve
    left = [x["item"]["id"] for x in r.api().next(n=10)]
    assert left == [lines[3]["meta"]["id"]]
