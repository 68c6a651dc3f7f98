"""Where model versions live: a small store interface and a directory store.

A version is written once and never changed: `put` moves a finished model directory in under
a temporary name and renames it into place, so a reader sees the whole model or nothing,
and a trainer killed half-way leaves only a temporary directory no one refers to. A
manifest of every file's sha256 goes in with it; `fetch` checks it, so a damaged or
truncated copy is refused instead of served.

Another store (an object store, say) implements the same three methods: `fetch` then
downloads into a local directory first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol

from loopline.schemas import ModelError

MANIFEST = "manifest.json"
INCOMING = ".incoming"


class ArtifactStore(Protocol):
    def put(self, key: str, model_dir: Path) -> str:
        """Store `model_dir` (moved, not copied, when it can be) under `key`; never overwrite."""
        ...

    def fetch(self, key: str) -> Path:
        """A local directory holding the verified artifact; ModelError if missing or damaged."""
        ...

    def work_dir(self) -> Path:
        """A fresh directory to build a model in, on the store's file system when it has one."""
        ...


class DirectoryStore:
    """Versions as directories under `root` (LOOPLINE_ARTIFACTS): `root/<task>/<version>/`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ModelError(f"artifact key {key!r} points outside the store {self.root}")
        return path

    def put(self, key: str, model_dir: Path) -> str:
        target = self.path(key)
        if target.exists():
            raise ModelError(
                f"artifact {key} already exists in {self.root}; versions are immutable"
            )
        staging = self.work_dir()
        shutil.move(str(model_dir), staging / "model")
        write_manifest(staging / "model")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / "model", target)  # atomic on one file system; fails if it exists
        shutil.rmtree(staging, ignore_errors=True)
        return key

    def fetch(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_dir():
            raise ModelError(
                f"artifact {key} is not in {self.root}: mount the artifact store there or set "
                "LOOPLINE_ARTIFACTS to where it is"
            )
        check_manifest(path, key)
        return path

    def work_dir(self) -> Path:
        path = self.root / INCOMING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def clear_work(self) -> None:
        """Remove what killed builds left behind (only the one trainer of a task calls it)."""
        shutil.rmtree(self.root / INCOMING, ignore_errors=True)


def write_manifest(model_dir: Path) -> None:
    files = {
        str(path.relative_to(model_dir)): file_sha256(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file()
    }
    (model_dir / MANIFEST).write_text(json.dumps(files, indent=1) + "\n")


def check_manifest(model_dir: Path, key: str) -> None:
    try:
        files = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        raise ModelError(f"artifact {key} has no readable {MANIFEST}: it is damaged") from None
    for name, digest in files.items():
        path = model_dir / name
        if not path.is_file() or file_sha256(path) != digest:
            raise ModelError(f"artifact {key} is damaged: {name} is missing or changed")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
