"""`loopline train` and `loopline evaluate` end to end on a small real subset, as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from loopline.processors.data import read_examples, write_examples
from loopline.schemas import load_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "terminate_account"]


def loopline(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "loopline.streams.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def small_task(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 4-intent slice of banking77: task file, train and dev JSONL."""
    banking = load_task(EXAMPLES / "banking77")
    config = yaml.safe_load((EXAMPLES / "banking77" / "task.yml").read_text())
    config.update(name="cards", labels={k: banking.labels[k] for k in LABELS})
    config["student"] = {"architecture": "bow", "epochs": 3}
    task_path = tmp_path / "task.yml"
    task_path.write_text(yaml.safe_dump(config))
    paths = []
    for split in ("train", "dev"):
        examples = read_examples(EXAMPLES / "banking77" / f"{split}.jsonl", banking)
        paths.append(tmp_path / f"{split}.jsonl")
        write_examples(paths[-1], [eg for eg in examples if eg.labels[0] in LABELS])
    return task_path, *paths


def test_train_then_evaluate_with_json_output(tmp_path):
    task, train, dev = small_task(tmp_path)
    model = tmp_path / "model"
    trained = loopline(
        "train", "--task", str(task), "--data", str(train), "--eval", str(dev), "--out", str(model)
    )
    assert trained.returncode == 0, trained.stderr
    assert f"to {model}" in trained.stdout.replace("\n", "")
    assert "epoch 3/3" in trained.stderr
    evaluated = loopline(
        "evaluate",
        "--task",
        str(task),
        "--data",
        str(dev),
        "--annotator",
        f"student:{model}",
        "--json",
        "--batch-size",
        "8",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert figures["n"] == 40
    assert 0.0 <= figures["accuracy"] <= 1.0
    assert figures["items_per_s"] > 0
    assert figures["batch_size"] == 8
    assert figures["annotator"].startswith("student:cards-")


def test_bad_data_is_one_clean_line_and_exit_code_2(tmp_path):
    task, train, _ = small_task(tmp_path)
    with train.open("a") as file:
        file.write('{"text": "hello", "label": "greeting"}\n')
    result = loopline(
        "train", "--task", str(task), "--data", str(train), "--out", str(tmp_path / "m")
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{train}:161: unknown label 'greeting'" in line


def test_unknown_annotator_and_missing_model_are_clean_errors(tmp_path):
    task, _, dev = small_task(tmp_path)
    for annotator, message in (
        ("teacher", "use student:MODEL_DIR or llm"),
        (f"student:{tmp_path / 'none'}", "no model directory there"),
    ):
        result = loopline(
            "evaluate", "--task", str(task), "--data", str(dev), "--annotator", annotator
        )
        assert result.returncode == 2
        assert message in result.stderr
