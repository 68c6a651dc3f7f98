"""The registry's transitions and the artifact store, without Kafka."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopline.schemas import ConfigError, ModelError, ModelEvent
from loopline.streams.models.artifacts import MANIFEST, DirectoryStore
from loopline.streams.models.registry import (
    PRODUCTION_KEY,
    RegistryState,
    promotion,
    registration,
    rejection,
    rollback,
)


def event(version: str) -> ModelEvent:
    return ModelEvent(
        task="t", version=version, artifact=f"t/{version}", created_at=datetime.now(UTC)
    )


def applied(state: RegistryState, records) -> RegistryState:
    for key, value in records:
        state.apply(key, value)
    return state


def test_promotions_retire_the_replaced_version_and_rollback_steps_back():
    state = RegistryState()
    for version in ("v1", "v2", "v3"):
        applied(state, registration(event(version)))
        applied(state, promotion(state, state.get(version), "better"))
    assert state.production.version == "v3" and state.production.history == ["v1", "v2"]
    assert [state.status(v) for v in ("v1", "v2", "v3")] == ["retired", "retired", "production"]

    applied(state, rollback(state))
    assert state.production.version == "v2" and state.production.history == ["v1"]
    assert state.status("v3") == "retired" and "rolled back to v2" in state.get("v3").reason
    applied(state, rollback(state))
    assert state.production.version == "v1"
    with pytest.raises(ConfigError, match="no earlier production version"):
        rollback(state)


def test_a_rejection_leaves_production_alone():
    state = applied(RegistryState(), registration(event("v1")))
    applied(state, promotion(state, state.get("v1"), "first"))
    applied(state, rejection(event("v2"), "worse"))
    assert state.production.version == "v1"
    assert state.status("v2") == "rejected" and state.get("v2").reason == "worse"


def test_the_pointer_is_written_after_the_version_records():
    state = applied(RegistryState(), registration(event("v1")))
    records = promotion(state, state.get("v1"), "first")
    assert [key for key, _ in records][-1] == PRODUCTION_KEY


def test_unknown_versions_are_named_with_what_exists():
    with pytest.raises(ConfigError, match="no model version 'v9'"):
        RegistryState().get("v9")


# the artifact store -------------------------------------------------------------------------


def model_dir(tmp_path: Path, name: str = "build") -> Path:
    path = tmp_path / name
    (path / "pipeline").mkdir(parents=True)
    (path / "loopline.json").write_text("{}")
    (path / "pipeline" / "weights.bin").write_bytes(b"\x00" * 1000)
    return path


def test_put_moves_a_model_in_whole_and_fetch_verifies_it(tmp_path):
    store = DirectoryStore(tmp_path / "store")
    key = store.put("t/v1", model_dir(tmp_path))
    fetched = store.fetch(key)
    assert (fetched / "pipeline" / "weights.bin").stat().st_size == 1000
    assert (fetched / MANIFEST).is_file()
    assert not (tmp_path / "build").exists()


def test_versions_are_never_overwritten(tmp_path):
    store = DirectoryStore(tmp_path / "store")
    store.put("t/v1", model_dir(tmp_path, "a"))
    with pytest.raises(ModelError, match="already exists"):
        store.put("t/v1", model_dir(tmp_path, "b"))


def test_damaged_or_missing_artifacts_are_refused(tmp_path):
    store = DirectoryStore(tmp_path / "store")
    key = store.put("t/v1", model_dir(tmp_path))
    (store.path(key) / "pipeline" / "weights.bin").write_bytes(b"\x01" * 10)
    with pytest.raises(ModelError, match="damaged: pipeline/weights.bin"):
        store.fetch(key)
    with pytest.raises(ModelError, match="mount the artifact store"):
        store.fetch("t/v2")
    with pytest.raises(ModelError, match="outside the store"):
        store.path("../elsewhere")


def test_readers_never_see_half_a_model(tmp_path):
    """While versions are put, every directory visible under the task is complete."""
    store = DirectoryStore(tmp_path / "store")
    seen_incomplete = []

    def watch(stop: threading.Event) -> None:
        while not stop.is_set():
            for path in (store.root / "t").glob("*") if (store.root / "t").exists() else ():
                if not (path / MANIFEST).is_file():
                    seen_incomplete.append(path)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    for i in range(30):
        store.put(f"t/v{i}", model_dir(tmp_path, f"build{i}"))
    stop.set()
    watcher.join()
    assert seen_incomplete == [] and len(list((store.root / "t").iterdir())) == 30
