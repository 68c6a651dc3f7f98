"""Property tests over what strangers send: the decoder, the messages and the NER alignment.

Whatever bytes arrive, the annotate stage's pure part (decode, route, build outputs, check
their size) gives every message exactly one outcome, and nothing raises but the errors that
are meant to (InputError, ValidationError). Examples stay small so the suite stays fast.
"""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from loopline.processors.llm.alignment import align_mentions
from loopline.processors.llm.parsing import Mention
from loopline.schemas import Annotation, DeadLetter, InputError, Prediction, RoutedItem, TextIn
from loopline.streams.agents.annotate import decide, suggestions_of
from loopline.streams.codec import decode_text, encode
from loopline.streams.outputs import decode_batch, outputs_for, settle
from tests.unit.test_annotate_outputs import TASK

MAX_CHARS = 2000
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The characters that break naive text handling, mixed into ordinary ones.
EDGE_CHARS = st.sampled_from(
    [
        "\x00", "\u200f", "\u202e", "\u200b", "\ufeff", "\u0301", "\u0308", "\r\n", "\r",
        "\n", "\u2028", "\u2029", "\t", " ", "\U0001f600", "\U0001f468\u200d\U0001f469",
        "é", "\ud800", "\udfff", "ß", "İ", "ﬁ",
    ]
)  # fmt: skip
TEXTS = st.lists(st.one_of(EDGE_CHARS, st.text(max_size=5)), max_size=30).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.one_of(TEXTS, JSON_VALUES)


def json_bytes(value: object) -> bytes:
    """JSON as a producer might write it: escaped (lone surrogates become \\udxxx) or raw."""
    return json.dumps(value).encode("ascii")


RAW_VALUES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda text, item_id, meta, extra: json_bytes(
            {
                k: v
                for k, v in {"text": text, "id": item_id, "meta": meta, **extra}.items()
                if v is not ...
            }  # fmt: skip
        ),
        text=FIELDS | st.just(...),
        item_id=FIELDS | st.just(...),
        meta=JSON_VALUES | st.just(...),
        extra=st.dictionaries(TEXTS, JSON_VALUES, max_size=2),
    ),
    JSON_VALUES.map(json_bytes),
    TEXTS.map(lambda text: text.encode("utf-8", errors="surrogatepass")),
)


def consumed(offset: int, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="t.texts", partition=0, offset=offset, value=value, timestamp=0)


def annotate_pure(values: list[bytes | None], confidence: float) -> tuple[list, list]:
    """The annotate stage without Kafka and the model: every output, every ledger entry."""
    messages = [consumed(offset, value) for offset, value in enumerate(values)]
    valid, outputs, outcomes = decode_batch(
        messages, lambda raw: decode_text(raw, MAX_CHARS), "demo", "annotate"
    )
    result = Annotation(labels=["a"], scores={"a": confidence}, confidence=confidence)
    for message, item in valid:
        decision = decide(result, item, TASK.routing, llm_available=True)
        item_outputs, entry = settle(
            message,
            outputs_for(item, suggestions_of(result, "v1", TASK), decision, TASK),
            decision,
            task="demo",
            stage="annotate",
            max_message_bytes=1_048_588,
        )
        outputs += item_outputs
        outcomes.append(entry)
    return outputs, outcomes


@FAST
@given(values=st.lists(RAW_VALUES | st.none(), min_size=1, max_size=8), confidence=st.floats(0, 1))
@example(values=[json_bytes({"text": "\U0001f600" * 10_000})], confidence=0.99)
@example(values=[b'{"id": "x", "text": "a\\ud800b"}', b'{"text": "\\u0000"}'], confidence=0.5)
@example(values=[json_bytes({"text": "a\r\nb\rc\n\u2028d", "meta": {"k": []}})], confidence=0.1)
def test_every_message_ends_as_exactly_one_outcome(values, confidence):
    outputs, outcomes = annotate_pure(values, confidence)
    assert sorted(entry.offset for entry in outcomes) == list(range(len(values)))
    for out in outputs:
        wire = out.value  # every output can be written out
        type(out.message).model_validate_json(wire)  # and read back by a consumer
    letters = [out.message for out in outputs if isinstance(out.message, DeadLetter)]
    assert len(letters) == sum(entry.outcome == "deadletter" for entry in outcomes)


@FAST
@given(text=TEXTS, item_id=TEXTS, meta=st.dictionaries(TEXTS, JSON_VALUES, max_size=3))
def test_a_text_built_in_python_is_refused_or_read_back(text, item_id, meta):
    try:
        item = TextIn(id=item_id, text=text, meta=meta)
        wire = encode(item)
    except (ValidationError, ValueError):
        return  # refused with a reason (a lone surrogate in the text, a control char in the id)
    try:
        again = decode_text(wire, MAX_CHARS)
    except InputError:
        return  # empty or blank text: a dead letter
    if "\\ud" not in json.dumps(meta):  # pydantic replaces lone surrogates in dict keys
        assert again == item


@FAST
@given(data=JSON_VALUES)
def test_wrong_types_are_validation_errors(data):
    for model in (TextIn, Prediction, RoutedItem, DeadLetter):
        with contextlib.suppress(ValidationError):
            model.model_validate(data)


WORDS = st.lists(st.sampled_from(["Paris", "paris", "New", "York", "é", "\u0301", "ﬁ"]) | TEXTS,
                 max_size=12)  # fmt: skip


@FAST
@given(
    words=WORDS,
    mentions=st.lists(st.tuples(TEXTS | st.sampled_from(["Paris", "New York"]), TEXTS), max_size=6),
    separators=st.lists(EDGE_CHARS, min_size=1),
)
@example(words=["New", "York", "\u200f", "New", "York"], mentions=[("new york", "LOC")],
         separators=["\r\n"])  # fmt: skip
def test_aligned_spans_lie_in_the_text_without_overlap(words, mentions, separators):
    text = "".join(word + separators[i % len(separators)] for i, word in enumerate(words))
    alignment = align_mentions(text, [Mention(words, label) for words, label in mentions])
    assert len(alignment.spans) + alignment.dropped_total == len(mentions)
    previous_end = 0
    for span in alignment.spans:
        assert previous_end <= span.start < span.end <= len(text)
        previous_end = span.end
