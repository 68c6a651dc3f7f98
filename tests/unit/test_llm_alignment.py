"""NER alignment policy: in order, first unclaimed occurrence, whole words, longest wins."""

from __future__ import annotations

from loopline.processors.llm.alignment import align_mentions
from loopline.processors.llm.parsing import Mention


def placed(text: str, mentions: list[Mention]) -> list[tuple[str, int, str]]:
    return [(text[s.start : s.end], s.start, s.label) for s in align_mentions(text, mentions).spans]


def test_a_mention_listed_twice_claims_two_occurrences_in_order() -> None:
    text = "Paris loves Paris"
    assert placed(text, [Mention("Paris", "loc"), Mention("Paris", "loc")]) == [
        ("Paris", 0, "loc"),
        ("Paris", 12, "loc"),
    ]


def test_a_mention_listed_once_labels_only_its_first_occurrence() -> None:
    assert placed("Paris loves Paris", [Mention("Paris", "loc")]) == [("Paris", 0, "loc")]


def test_the_search_goes_on_after_the_previous_mention() -> None:
    text = "Bob and Ann, then Ann and Bob"
    mentions = [Mention("Ann", "per"), Mention("Bob", "per")]
    assert placed(text, mentions) == [("Ann", 8, "per"), ("Bob", 26, "per")]


def test_mentions_listed_out_of_order_still_find_an_earlier_occurrence() -> None:
    text = "Ann met Bob"
    assert placed(text, [Mention("Bob", "per"), Mention("Ann", "per")]) == [
        ("Ann", 0, "per"),
        ("Bob", 8, "per"),
    ]


def test_overlaps_keep_the_longest_and_count_the_rest() -> None:
    text = "I love New York City"
    alignment = align_mentions(text, [Mention("New York", "loc"), Mention("New York City", "loc")])
    assert [(text[s.start : s.end]) for s in alignment.spans] == ["New York City"]
    assert alignment.dropped == {"overlap": 1}


def test_words_not_in_the_text_are_dropped_and_counted() -> None:
    alignment = align_mentions("Ann met Bob", [Mention("Carl", "per"), Mention("Bob", "per")])
    assert [s.start for s in alignment.spans] == [8]
    assert alignment.dropped == {"not_found": 1}
    assert alignment.dropped_total == 1


def test_whitespace_and_case_are_forgiven_but_parts_of_words_are_not() -> None:
    text = "new  york is not Yorkshire"
    assert placed(text, [Mention("New York", "loc")]) == [("new  york", 0, "loc")]
    assert align_mentions("Yorkshire", [Mention("York", "loc")]).dropped == {"not_found": 1}


def test_exact_case_is_preferred_to_an_earlier_other_case() -> None:
    text = "apple pie and Apple shares"
    assert placed(text, [Mention("Apple", "org")]) == [("Apple", 14, "org")]


def test_scores_travel_with_their_mentions() -> None:
    spans = align_mentions("Ann", [Mention("Ann", "per", score=0.75)]).spans
    assert spans[0].score == 0.75
