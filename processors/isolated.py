"""A processor run in a child process, so that the model and the event loop each get a core.

A worker's event loop (Kafka intake, routing, sending) and a student's forward pass both
hold the GIL. In one process they take turns: measured on 2 cores, the student ran 2.5
times slower beside a busy loop than alone. In a child process, each has an interpreter
of its own and the worker uses both cores.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

from loopline.schemas import Annotation, LooplineError
from loopline.schemas.messages import Source


class Predictor(Protocol):
    """What runs in the child: a processor with a synchronous `predict`, like the Student."""

    source: Source
    version: str

    def predict(self, texts: Sequence[str]) -> list[Annotation]: ...


_loaded: Predictor | None = None


def _load(load: Callable[[], Predictor]) -> tuple[Source, str]:
    global _loaded
    _loaded = load()
    # The model lives as long as the child: frozen, the collector stops walking it at every
    # full collection, which otherwise held a batch for tens of milliseconds.
    gc.collect()
    gc.freeze()
    return _loaded.source, _loaded.version


def _predict(texts: Sequence[str]) -> list[Annotation]:
    assert _loaded is not None, "InChildProcess.start loads the model before any call"
    return _loaded.predict(texts)


def exit_with_parent(parent: int) -> None:
    """Without it, a parent killed by SIGKILL leaves the child waiting forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class InChildProcess:
    """The Processor interface, answered by a Predictor loaded in one child process.

    Batches are answered one at a time, in order. Errors from loading (a damaged model
    directory, say) are raised by `start`, in the parent, with their message. The child
    stops when the parent exits, however it exits.
    """

    def __init__(self, pool: ProcessPoolExecutor, source: Source, version: str) -> None:
        self._pool = pool
        self.source = source
        self.version = version

    @classmethod
    def start(cls, load: Callable[[], Predictor]) -> InChildProcess:
        """Start the child and load the model in it; `load` must be picklable."""
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            source, version = pool.submit(_load, load).result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return cls(pool, source, version)

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _predict, texts)

    def close(self) -> None:
        """Stop the child (after the batch it may be answering)."""
        self._pool.shutdown(cancel_futures=True)
