"""The fidelity check: does the third-party ONNX export compute what the official weights do?

The ONNX file that runs is not an official file, so its pooled vectors are compared with
those of a plain numpy forward pass of BERT over the official ``model.safetensors`` (read
with the `safetensors` package's numpy API, fp32), on the same token ids. The check passes
when every text's cosine similarity is at least `MIN_COSINE`. int8 weights cost a little
precision; a wrong export, a wrong tokenizer or wrong pooling costs far more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf

from loopline.processors.encoder.runtime import SentenceEncoder, pad, pool

MIN_COSINE = 0.998

FIDELITY_TEXTS: tuple[str, ...] = (
    "I am still waiting on my card?",
    "What can I do if my card still hasn't arrived after 2 weeks?",
    "How do I top up my account with Apple Pay?",
    "Why was I charged an extra fee when I withdrew cash abroad?",
    "My transfer to a friend in Germany hasn't gone through yet, what is going on",
    "I think someone has stolen my phone and is using the app.",
    "Can I change my PIN at any ATM?",
    "The exchange rate you gave me was wrong!!!",
    "Add this song to my Road Trip playlist",
    "Book a table for four at a sushi place near the station tomorrow at 8pm",
    "Will it rain in Edinburgh on Saturday afternoon?",
    "play some jazz from the fifties on spotify",
    "Rate this novel five out of six stars",
    "Find the TV series called The Wire",
    "What films are showing at the cinema downtown tonight?",
    "card not working",
    "cancel my transfer",
    "top up failed",
    "1234 5678 9012 3456",
    "Ünïcödé text with accents: café, naïve, Zürich, São Paulo.",
    "混合语言的文本 mixed with English words",
    "Emoji 🙂 and symbols #hashtag @mention http://example.com/path?q=1",
    "ALL CAPS SHOUTING ABOUT A DECLINED PAYMENT",
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits unbelievably long words like antidisestablishmentarianism.",
    "New York-based Apple Inc. reported revenue of $89.5 billion on Thursday.",
    "@paul_smith are you going to Glastonbury this year ? #music",
    "Why is my balance not updated after I deposited a cheque yesterday morning?",
    "I would like to cancel the direct debit that was set up last month, please.",
    "Is there a limit on how much I can send to another country in one day?",
    "Dear team, I have been a customer for many years and never had a problem until now. "
    "Last Tuesday I tried to pay for groceries with my card and it was declined twice, even "
    "though there was plenty of money in the account. I called the number on the back of "
    "the card but nobody answered. Then I tried the app, which said the card was active. "
    "Could you please explain what happened, whether it will happen again, and what I should "
    "do next time so that I am not left standing at the till without a way to pay? I would "
    "also like to know whether any fees were charged for the declined attempts, because my "
    "statement shows two pending transactions that I do not recognise at all. "
    "Thank you in advance for looking into this; I am travelling abroad next week and need "
    "the card to work reliably, including at cash machines in other currencies.",
    "Tell me the weather forecast for the next three days in Paris, France",
    "put the album Blue on my chill evening list",
    "Show me the schedule for animated movies at the nearest movie house",
    "I give The Hobbit a rating of 4",
)
"""Real-looking requests, short and long (one past 256 tokens), accented, CJK, emoji, numbers.

Texts of one or two word pieces ("ok", "?", the empty text) are left out: their vector is a
mean over three tokens, where int8 rounding shows most (cosine 0.996-0.998 measured); the
README gives those figures.
"""


@dataclass(frozen=True)
class Fidelity:
    """Cosine of the ONNX model's pooled vector against the reference's, per text."""

    cosines: np.ndarray

    @property
    def min_cosine(self) -> float:
        return float(self.cosines.min())

    @property
    def mean_cosine(self) -> float:
        return float(self.cosines.mean())

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"fidelity check {verdict}: cosine of the ONNX model's pooled vectors against the "
            f"official weights on {len(self.cosines)} texts: min {self.min_cosine:.5f}, "
            f"mean {self.mean_cosine:.5f} (needs min >= {MIN_COSINE})"
        )


class ReferenceBert:
    """BERT's encoder in numpy (fp32), as in `transformers`' BertModel, for checking only."""

    def __init__(self, safetensors: Path, *, attention_heads: int, layer_norm_eps: float):
        self.weights = load_file(str(safetensors))
        self.heads = attention_heads
        self.eps = layer_norm_eps
        self.layers = 1 + max(
            int(name.split(".")[2]) for name in self.weights if name.startswith("encoder.layer.")
        )

    def hidden_states(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.weights
        length = input_ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        blocked = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for layer in range(self.layers):
            prefix = f"encoder.layer.{layer}."
            attended = self._attention(x, blocked, prefix + "attention.")
            x = self._norm(x + attended, prefix + "attention.output.LayerNorm")
            inner = _gelu(self._dense(x, prefix + "intermediate.dense"))
            x = self._norm(
                x + self._dense(inner, prefix + "output.dense"), prefix + "output.LayerNorm"
            )
        return x

    def _attention(self, x: np.ndarray, blocked: np.ndarray, prefix: str) -> np.ndarray:
        batch, length, width = x.shape
        size = width // self.heads

        def heads(name: str) -> np.ndarray:
            projected = self._dense(x, prefix + f"self.{name}")
            return projected.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2) / math.sqrt(size)
        scores = scores + blocked
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, length, width)
        return self._dense(context, prefix + "output.dense")

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        variance = x.var(axis=-1, keepdims=True)
        normed = (x - mean) / np.sqrt(variance + self.eps)
        return normed * self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU that BERT uses."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def check_fidelity(
    encoder: SentenceEncoder,
    reference: ReferenceBert,
    texts: Sequence[str] = FIDELITY_TEXTS,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> Fidelity:
    """Both models on the same token ids (length-sorted batches); the cosine of their pooled
    vectors per text, in the order of `texts`."""
    ids = encoder.token_ids(texts)
    order = np.argsort([len(row) for row in ids], kind="stable")
    cosines = np.zeros(len(ids))
    for start in range(0, len(ids), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = pad([ids[i] for i in rows])
        ours = pool(encoder.hidden_states(input_ids, mask), mask)
        official = pool(reference.hidden_states(input_ids, mask), mask)
        cosines[rows] = (ours * official).sum(axis=1)
        if on_batch:
            on_batch(len(rows))
    return Fidelity(cosines)
