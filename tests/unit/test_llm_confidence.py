"""Confidence from token log-probabilities, renormalised over the labels the schema allows."""

from __future__ import annotations

import math

import pytest

from loopline.processors.llm.client import TokenLogprob
from loopline.processors.llm.confidence import (
    empty_list_probability,
    mention_probabilities,
    multilabel_probabilities,
    textcat_probability,
)
from loopline.processors.llm.parsing import Mention
from tests.fixtures.llm import token

LABELS = ["PlayMusic", "GetWeather", "BookRestaurant"]


def tokens(*entries: dict) -> list[TokenLogprob]:
    return [TokenLogprob.from_response(entry) for entry in entries]


def p(*logprobs: float) -> list[float]:
    return [math.exp(lp) for lp in logprobs]


def test_a_label_is_weighed_against_the_other_labels_only() -> None:
    answer = tokens(
        token('{"', -0.1),
        token("label", -3.0, ("intent", -0.1)),  # format choices do not count
        token('":', 0.0),
        token(' "', 0.0),
        token("Get", -0.5, ("Play", -1.0), ("Book", -3.0), ("Sure", -2.0)),
        token("Weather", -0.01, (" Weather", -5.0)),
        token('"}', -2.0, ('"\n', -0.2)),
    )
    get, play, book = p(-0.5, -1.0, -3.0)
    assert textcat_probability(answer, "GetWeather", LABELS) == pytest.approx(
        get / (get + play + book)
    )


def test_a_token_that_starts_with_the_quote_is_compared_with_the_same_lead() -> None:
    answer = tokens(
        token('{"label":', 0.0),
        token(' "Play', -0.2, (' "Get', -1.0), ("\n", -0.5), (' "Dance', -2.0)),
        token('Music"}', 0.0),
    )
    play, get = p(-0.2, -1.0)
    assert textcat_probability(answer, "PlayMusic", LABELS) == pytest.approx(play / (play + get))


def test_no_label_in_the_tokens_means_no_figure() -> None:
    answer = tokens(token('{"label": "PlayMusic"}', -0.1))
    assert textcat_probability(answer, "GetWeather", LABELS) is None
    assert textcat_probability(tokens(token("PlayMusic", -0.1)), "PlayMusic", LABELS) is None


def test_multilabel_scores_each_chosen_label() -> None:
    answer = tokens(
        token('{"labels": ["', 0.0),
        token("PlayMusic", -0.3, ("GetWeather", -1.5)),
        token('", "', 0.0),
        token("Book", -0.1),
        token("Restaurant", 0.0),
        token('"]}', 0.0),
    )
    scores = multilabel_probabilities(answer, ["PlayMusic", "BookRestaurant"], LABELS)
    play, weather = p(-0.3, -1.5)
    assert scores == {
        "PlayMusic": pytest.approx(play / (play + weather)),
        "BookRestaurant": pytest.approx(1.0),
    }


def test_a_mention_multiplies_its_words_by_its_label() -> None:
    answer = tokens(
        token('{"entities": [{"text": "', 0.0),
        token("Ann", -0.2, ("Bob", -1.0)),
        token('", "label": "', 0.0),
        token("person", -0.4, ("location", -1.4), ("xyz", -0.1)),
        token('"}]}', 0.0),
    )
    words, person, location = p(-0.2, -0.4, -1.4)
    scores = mention_probabilities(answer, [Mention("Ann", "person")], ["person", "location"])
    assert scores == [pytest.approx(words * person / (person + location))]
    assert mention_probabilities(answer, [Mention("Bob", "person")], ["person"]) == [None]


def test_an_empty_list_is_as_sure_as_closing_it_at_once() -> None:
    answer = tokens(token('{"entities": [', 0.0), token("]}", -0.3, ('{"', -1.5)))
    assert empty_list_probability(answer, "entities") == pytest.approx(math.exp(-0.3))
    assert empty_list_probability(answer, "labels") is None
