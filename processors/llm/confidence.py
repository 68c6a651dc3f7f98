"""How sure the LLM was, from the log-probabilities of the tokens it generated.

A label's probability is the product, over the tokens that spell the label in the answer,
of each token's probability renormalised over the alternatives (among the server's top
`k`) that still spell some allowed label. That is the model's probability of this label
against the other labels, not against any text it might have written (llama.cpp reports
probabilities from before its grammar masks the disallowed tokens; OpenAI reports the raw
ones too). Alternatives outside the top k are missed, so the figure leans a little high.
An entity's score multiplies its label's probability by the raw probability of the tokens
that copy its words. These are the model's own probabilities, not calibrated ones:
calibrate against human labels before trusting them as accuracies.

Offsets here are byte offsets into the concatenated token bytes, so tokens that split a
multi-byte character still line up.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from loopline.processors.llm.client import TokenLogprob
from loopline.processors.llm.parsing import Mention


def label_probability(
    tokens: Sequence[TokenLogprob], start: int, end: int, allowed: Sequence[str] | None
) -> float | None:
    """Probability of the value at bytes [start, end); None when no token covers it.

    `allowed` lists the values the schema permits (the labels); None means any text, and
    the raw token probabilities are used.
    """
    allowed_bytes = None if allowed is None else [_json_bytes(value) for value in allowed]
    joined = b"".join(token.token for token in tokens)
    probability, covered, offset = 1.0, False, 0
    for token in tokens:
        token_start, offset = offset, offset + len(token.token)
        if offset <= start or token_start >= end:
            continue
        covered = True
        probability *= _conditional(token, joined, token_start, start, allowed_bytes)
    return probability if covered else None


def textcat_probability(
    tokens: Sequence[TokenLogprob], label: str, labels: Sequence[str]
) -> float | None:
    joined = b"".join(token.token for token in tokens)
    found = re.search(rb'"label"\s*:\s*"', joined)
    if found is None or not joined.startswith(_json_bytes(label), found.end()):
        return None
    return label_probability(tokens, found.end(), found.end() + len(_json_bytes(label)), labels)


def multilabel_probabilities(
    tokens: Sequence[TokenLogprob], chosen: Sequence[str], labels: Sequence[str]
) -> dict[str, float] | None:
    """Each chosen label's probability; None when the answer cannot be found in the tokens."""
    joined = b"".join(token.token for token in tokens)
    found = re.search(rb'"labels"\s*:\s*\[', joined)
    if found is None:
        return None
    scores: dict[str, float] = {}
    cursor = found.end()
    for label in chosen:
        needle = b'"' + _json_bytes(label) + b'"'
        index = joined.find(needle, cursor)
        if index < 0:
            return None
        score = label_probability(tokens, index + 1, index + len(needle) - 1, labels)
        if score is None:
            return None
        scores[label] = score
        cursor = index + len(needle)
    return scores


def mention_probabilities(
    tokens: Sequence[TokenLogprob], mentions: Sequence[Mention], labels: Sequence[str]
) -> list[float | None]:
    """Each mention's probability: its label against the others, times its words' tokens."""
    joined = b"".join(token.token for token in tokens)
    cursor = 0
    scores: list[float | None] = []
    for mention in mentions:
        text = re.compile(rb'"text"\s*:\s*"' + re.escape(_json_bytes(mention.text)) + rb'"')
        label = re.compile(rb'"label"\s*:\s*"' + re.escape(_json_bytes(mention.label)) + rb'"')
        text_match = text.search(joined, cursor)
        label_match = label.search(joined, text_match.end()) if text_match else None
        if text_match is None or label_match is None:
            scores.append(None)
            continue
        words = label_probability(tokens, *_value_range(text_match, mention.text), None)
        kind = label_probability(tokens, *_value_range(label_match, mention.label), labels)
        scores.append(None if words is None or kind is None else words * kind)
        cursor = label_match.end()
    return scores


def empty_list_probability(tokens: Sequence[TokenLogprob], key: str) -> float | None:
    """Probability of closing the list under `key` right after opening it (no items)."""
    joined = b"".join(token.token for token in tokens)
    found = re.search(rb'"' + key.encode() + rb'"\s*:\s*\[\s*\]', joined)
    if found is None:
        return None
    return label_probability(tokens, found.end() - 1, found.end(), None)


def _conditional(
    token: TokenLogprob,
    joined: bytes,
    token_start: int,
    start: int,
    allowed: list[bytes] | None,
) -> float:
    """The token's probability among the alternatives that keep the value allowed."""
    chosen = math.exp(token.logprob)
    if allowed is None:
        return chosen
    lead = joined[token_start:start] if token_start < start else b""
    spelled = joined[start:token_start] if token_start > start else b""
    total = chosen
    for alternative, logprob in token.alternatives:
        if alternative == token.token or not alternative.startswith(lead):
            continue
        candidate = spelled + alternative[len(lead) :]
        if any(
            value.startswith(candidate) or candidate.startswith(value + b'"') for value in allowed
        ):
            total += math.exp(logprob)
    return min(1.0, chosen / total)


def _value_range(match: re.Match[bytes], value: str) -> tuple[int, int]:
    """Byte range of `value` in a `"key": "value"` match (quotes excluded)."""
    end = match.end() - 1
    return end - len(_json_bytes(value)), end


def _json_bytes(value: str) -> bytes:
    """How `value` is spelled inside a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8")
