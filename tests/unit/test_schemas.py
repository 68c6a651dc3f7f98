from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from loopline.schemas import MESSAGES, Prediction, TextIn
from loopline.schemas.export import BUNDLED_DIR, export, json_schemas, render


def test_checked_in_json_schemas_are_current():
    """If this fails, run `loopline schemas export schemas/json` and commit the result."""
    for name, schema in json_schemas().items():
        path = BUNDLED_DIR / name
        assert path.exists(), f"{path} missing"
        assert path.read_text(encoding="utf-8") == render(schema), f"{name} is stale"


def test_export_writes_one_schema_per_message(tmp_path):
    written = export(tmp_path)
    names = {path.name for path in written}
    assert {f"{m.__name__}.schema.json" for m in MESSAGES} <= names
    for path in written:
        schema = json.loads(path.read_text())
        assert schema["type"] == "object"


def test_every_message_carries_a_schema_version():
    for model in MESSAGES:
        assert model.model_fields["schema_version"].default == 1


def test_unknown_schema_version_is_refused():
    with pytest.raises(ValidationError):
        TextIn.model_validate({"schema_version": 2, "text": "x"})


def test_confidence_must_be_a_probability():
    with pytest.raises(ValidationError):
        Prediction(
            id="1", task="t", confidence=1.5, source="student", model_version="v", revision=0
        )
