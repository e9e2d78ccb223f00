"""The word error rate and turn scoring that the benchmarks and e2e tests rely on."""

from __future__ import annotations

from tests.helpers import normalize, score_turns, wer


def test_accents_are_folded_not_split() -> None:
    assert normalize("Montréal, São Paulo; naïve café") == "montreal sao paulo naive cafe"
    assert wer("montreal forced aligner", "Montréal forced aligner.") == 0.0


def test_typographic_apostrophe_is_an_apostrophe() -> None:
    assert normalize("We don’t know") == normalize("we don't know") == "we don't know"


def test_punctuation_and_case_do_not_count() -> None:
    assert wer("the vendor promised a fix", "The vendor, promised a fix!") == 0.0
    assert wer("one two three", "one three") == 1 / 3


def test_a_turn_read_with_accents_has_its_hits() -> None:
    turns = [(0.0, 3.0, "montreal forced aligner"), (3.5, 5.0, "thank you")]
    words = [("Montréal", 0.2, 0.8), ("forced", 0.9, 1.3), ("aligner.", 1.4, 2.0)]
    words += [("Thank", 3.6, 3.9), ("you.", 3.9, 4.2)]
    got = score_turns(turns, words)
    assert got.hits == [3, 2]
    assert got.wer == 0.0
    assert got.inside == 1.0


def test_a_word_outside_its_turn_counts_against_inside() -> None:
    turns = [(0.0, 2.0, "hello there"), (5.0, 7.0, "good morning")]
    words = [("hello", 0.1, 0.5), ("there", 0.6, 1.0), ("good", 3.0, 3.3), ("morning", 5.5, 6.0)]
    got = score_turns(turns, words, margin=0.5)
    assert got.hits == [2, 2]
    assert got.inside == 3 / 4


def test_a_turn_misread_is_told_from_a_turn_dropped() -> None:
    turns = [(0.0, 3.0, "montreal forced aligner"), (3.5, 5.0, "thank you")]
    words = [("Stilliner", 1.0, 1.6), ("...", 2.0, 2.5)]  # the first misread, the second lost
    got = score_turns(turns, words)
    assert got.hits == [0, 0]
    assert got.said == [1, 0]  # a mark such as "..." is no word said
