"""Sentence vectors cached by text hash, so retraining the head embeds only new texts.

Embedding is what costs in training (minutes for ten thousand texts on 2 cores); fitting a
linear head on cached vectors takes seconds. The cache is one SQLite file per encoder
(keyed by its ONNX file's sha256, so two encoders never mix), safe for several processes,
written batch by batch so an interrupted run keeps what it computed.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopline.processors.encoder.runtime import SentenceEncoder

CHUNK = 512
"""Texts embedded (and written to the cache) at a time."""
SQL_VARIABLES = 900
"""Keys per lookup: below SQLite's limit on bound parameters."""


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray
    computed: int
    cached: int


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


class EmbeddingCache:
    """Vectors by sha256 of the text, for one encoder."""

    def __init__(self, path: Path, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.dimension = dimension
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB)")

    @classmethod
    def for_encoder(cls, cache_dir: Path, name: str, onnx_sha256: str, dimension: int):
        folder = Path(cache_dir).expanduser() / "embeddings"
        return cls(folder / f"{name}-{onnx_sha256[:16]}.sqlite3", dimension)

    def embed(
        self,
        encoder: SentenceEncoder,
        texts: Sequence[str],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Embedded:
        """Vectors for `texts` (in order): cached ones read, the others computed and stored.

        `on_progress(done, total)` counts distinct texts, the cached ones first.
        """
        unique = list(dict.fromkeys(texts))
        found = self._lookup([text_key(t) for t in unique])
        missing = [t for t in unique if text_key(t) not in found]
        done = len(unique) - len(missing)
        if on_progress:
            on_progress(done, len(unique))
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            vectors = encoder.embed(chunk)
            self._store(chunk, vectors)
            found.update((text_key(t), v) for t, v in zip(chunk, vectors))
            done += len(chunk)
            if on_progress:
                on_progress(done, len(unique))
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            matrix[i] = found[text_key(text)]
        return Embedded(matrix, computed=len(missing), cached=len(unique) - len(missing))

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found = {}
        for start in range(0, len(keys), SQL_VARIABLES):
            chunk = keys[start : start + SQL_VARIABLES]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, vector FROM vectors WHERE key IN ({marks})"
            rows = self._db.execute(query, chunk)
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if len(vector) == self.dimension:
                    found[key] = vector
        return found

    def _store(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(text_key(t), v.astype(np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()
