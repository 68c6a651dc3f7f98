"""JSON Schemas of every message, for consumers in any language."""

from __future__ import annotations

import json
from pathlib import Path

from loopline.schemas.messages import MESSAGES
from loopline.schemas.task import TaskConfig

BUNDLED_DIR = Path(__file__).parent / "json"


def json_schemas() -> dict[str, dict]:
    """File name -> JSON Schema, for every message and the task config."""
    models = (*MESSAGES, TaskConfig)
    return {f"{model.__name__}.schema.json": model.model_json_schema() for model in models}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
