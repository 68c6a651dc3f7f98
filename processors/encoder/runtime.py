"""Texts to sentence vectors with ONNX Runtime and a fast tokenizer: no torch anywhere.

The tokenizer is `transformers`' PreTrainedTokenizerFast over the model's official
``tokenizer.json`` (the Rust `tokenizers` library underneath). Texts are tokenized once,
sorted by length and cut into batches, so that a batch pads to about its own length: on
short intents that is several times faster than padding to the longest text of a Kafka
batch. Vectors are the mean of the last hidden states over real tokens, L2-normalised, as
sentence-transformers computes them for all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BATCH_SIZE = 32
"""Texts per forward pass: measured fastest on 2 busy cores for short texts (length-sorted)."""
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def load_tokenizer(path: Path, max_length: int) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a ``tokenizer.json`` (BERT's special tokens, truncation).

    transformers is imported here, not with the module: it takes seconds and ~40 MB, which
    workers of spaCy students should not pay. It warns at import that torch is missing;
    loopline never needs torch.
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), model_max_length=max_length, **SPECIAL_TOKENS
    )


class SentenceEncoder:
    """A sentence encoder: `embed(texts)` -> one L2-normalised vector per text.

    `threads` is ONNX Runtime's intra-op thread count (0: its default, one per core). A
    worker runs the model in a child process beside its event loop, so on a small machine
    fewer threads than cores may serve it better: `loopline bench stream` tells.
    """

    def __init__(self, model: Path, tokenizer: Path, *, max_length: int, threads: int = 0):
        import onnxruntime  # here for the same reason as transformers in `load_tokenizer`

        self.max_length = max_length
        self.tokenizer = load_tokenizer(tokenizer, max_length)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self.dimension = int(self.session.get_outputs()[0].shape[-1])
        self.texts_embedded = 0
        """How many texts went through the model: what the embedding cache saves."""

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS] and [SEP], truncated to `max_length`."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return encoded["input_ids"]

    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = BATCH_SIZE,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """(len(texts), dimension) float32 vectors; `on_batch(n)` after each n texts."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        ids = self.token_ids(texts)
        order = np.argsort([len(row) for row in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad([ids[i] for i in rows])
            vectors[rows] = pool(self.hidden_states(input_ids, mask), mask)
            self.texts_embedded += len(rows)
            if on_batch:
                on_batch(len(rows))
        return vectors

    def hidden_states(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The model's last hidden states, (batch, tokens, dimension)."""
        inputs = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        return self.session.run(None, inputs)[0]


def pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token id rows padded with 0 ([PAD]) to the longest, and the attention mask."""
    width = max(len(row) for row in rows)
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, then L2 norm: sentence-transformers' pooling for this model."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    mean = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norms, 1e-12)).astype(np.float32)
