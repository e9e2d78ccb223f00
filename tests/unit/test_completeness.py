"""The completeness check's pure parts: words placed in regions, short regions found."""

from __future__ import annotations

from postcall.domain import Word
from postcall.engines.completeness import (
    DOUBTED_MEAN_P,
    confidence,
    doubted,
    doubted_stretches,
    merged,
    place,
    recover,
    replaced,
    replaced_if_said,
    segments,
    unheard,
    unrepeated,
)

RATE = 16000


def w(start: float, end: float, text: str = "w") -> Word:
    return Word(start=start, end=end, text=text, probability=0.9)


REGIONS = [(0, 2 * RATE), (5 * RATE, 9 * RATE)]  # 0-2 s and 5-9 s


def test_each_word_goes_to_the_region_it_was_said_in_and_stays_inside_it() -> None:
    words = [w(0.5, 0.9), w(1.8, 2.4), w(2.6, 3.0), w(3.9, 4.6), w(8.8, 9.5)]
    placed = place(words, REGIONS)
    assert [len(p) for p in placed] == [3, 2]
    for (a, b), group in zip(REGIONS, placed, strict=True):
        for word in group:
            assert a / RATE <= word.start <= word.end <= b / RATE
    # Nearer to the second region's start than to the first region's end.
    assert placed[1][0].start == 5.0


def test_unheard_stretches_are_found_inside_regions_and_whole() -> None:
    regions = [(0, 4 * RATE), (5 * RATE, 5 * RATE + RATE // 2), (6 * RATE, 10 * RATE)]
    # Region 0: words until 1.5 s, then 2.5 s with none (an utterance skipped after its
    # neighbour); region 1: half a second, too short to judge; region 2: words throughout.
    words = [
        [w(0.1, 0.5), w(0.6, 1.0), w(1.1, 1.5)],
        [],
        [w(6 + i * 0.45, 6.35 + i * 0.45) for i in range(9)],
    ]
    assert unheard(regions, words) == [(0, (round(1.5 * RATE), 4 * RATE))]
    # With no words at all, every region of a second or more is unheard, whole.
    assert unheard(regions, [[], [], []]) == [(0, regions[0]), (2, regions[2])]


def test_one_long_word_does_not_account_for_a_whole_region() -> None:
    stretched = [[w(0.2, 3.8)]]  # a decoder's word spread over 3.6 s
    assert {i for i, _ in unheard([(0, 4 * RATE)], stretched)} == {0}


def test_a_word_found_again_against_the_same_word_at_a_stretch_edge_is_not_doubled() -> None:
    first = [w(1.0, 1.3, "this"), w(1.3, 1.5, "is"), w(4.0, 4.2, "done")]
    found = [w(1.5, 1.5, "is"), w(1.5, 1.9, "what"), w(2.0, 2.3, "is"), w(3.9, 4.0, "Done.")]
    assert [x.text for x in merged(first, found)] == ["this", "is", "what", "is", "done"]


def test_words_found_again_are_merged_in_order() -> None:
    first, found = [w(0, 1, "a"), w(3, 4, "c")], [w(1.5, 2.5, "b")]
    assert [x.text for x in merged(first, found)] == ["a", "b", "c"]


def test_segments_never_span_two_regions() -> None:
    placed = [[w(0.1, 0.4, "Hello"), w(0.5, 0.9, "there.")], [], [w(5.0, 5.4, "Yes")]]
    out = segments(placed)
    assert [s.text for s in out] == ["Hello there.", "Yes"]
    assert out[0].end <= 0.9 and out[1].start == 5.0


def test_a_stretched_word_accounts_for_nothing() -> None:
    # One word spread by the alignment over the whole 4 s region: the region is read
    # again whole.
    assert unheard([(0, 4 * RATE)], [[w(0.0, 4.0)]]) == [(0, (0, 4 * RATE))]


def test_a_new_reading_replaces_what_its_stretch_held_unless_it_holds_less() -> None:
    words = [w(0.1, 0.4, "a"), w(1.0, 3.5, "stretched"), w(3.8, 3.9, "z")]
    span = (round(0.8 * RATE), round(3.6 * RATE))
    again = [w(1.0, 1.4, "what"), w(1.5, 1.9, "was"), w(2.0, 2.4, "said")]
    assert [x.text for x in replaced(words, span, again)] == ["a", "what", "was", "said", "z"]
    assert replaced(words, span, []) == words


def test_recover_reads_packed_first_then_alone_what_is_still_unheard() -> None:
    # Two regions: the first came back with words for its first second only, the second
    # with none. The packed reading fills the first region's gap but skips the second
    # region (as a decoder does); reading that alone fills it.
    regions = [(0, 4 * RATE), (6 * RATE, 9 * RATE)]
    placed = [[w(0.1, 0.4, "one"), w(0.5, 0.9, "two")], []]
    calls: list[tuple[list[tuple[int, int]], bool]] = []

    def read_again(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
        calls.append((spans, packed))
        if packed:
            return [w(1.6 + 0.5 * i, 1.9 + 0.5 * i, f"gap{i}") for i in range(5)]
        return [w(6.2 + 0.5 * i, 6.5 + 0.5 * i, f"late{i}") for i in range(5)]

    out = recover(regions, placed, read_again)
    assert [packed for _, packed in calls] == [True, False]
    assert calls[1][0] == [regions[1]]  # only what the packed reading left unheard
    assert [x.text for x in out[0]] == ["one", "two", "gap0", "gap1", "gap2", "gap3", "gap4"]
    assert [x.text for x in out[1]] == [f"late{i}" for i in range(5)]


def test_recover_stops_when_nothing_is_unheard_and_after_its_rounds() -> None:
    said = [[w(0.1 + 0.4 * i, 0.4 + 0.4 * i) for i in range(9)]]
    calls = []

    def read_again(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
        calls.append(packed)
        return []

    assert recover([(0, 4 * RATE)], said, read_again) == said
    assert calls == []
    recover([(0, 4 * RATE)], [[]], read_again, rounds=3)
    assert calls == [True, False]  # a stretch that stays silent: packed, then alone, once


def test_a_stretch_whose_reading_alone_stops_short_is_read_again_from_where_it_stopped() -> None:
    # A 5.5 s stretch that the first readings skipped holds the tail of one speaker's
    # sentence ("1462", which the alignment stretches over 1.3 s) and a whispered turn.
    # Read alone, the decoder reads the tail and stops: the same stretch would read the
    # same again, so what follows that reading's last word is read alone instead.
    region = (0, 10 * RATE)
    placed = [[w(0.1 + 0.4 * k, 0.4 + 0.4 * k, f"a{k}") for k in range(10)]]
    calls: list[tuple[list[tuple[int, int]], bool]] = []

    def read_again(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
        calls.append((spans, packed))
        a = spans[0][0] / RATE
        if a < 5.0:
            return [w(a, a + 1.3, "1462.")]
        return [w(a + 0.3 + 0.3 * k, a + 0.5 + 0.3 * k, f"whisper{k}") for k in range(10)]

    out = recover([region], placed, read_again)
    assert [packed for _, packed in calls] == [True, False, False]
    assert calls[0][0] == calls[1][0]  # packed, then alone: the same stretch, the same reading
    (tail,) = calls[2][0]
    assert tail == (calls[1][0][0][0] + round(1.3 * RATE), region[1])
    assert [x.text for x in out[0]][-11:] == ["1462."] + [f"whisper{k}" for k in range(10)]
    # A reading alone that stops within a second of the stretch's end is not followed.
    calls.clear()

    def stretched_to_the_end(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
        calls.append((spans, packed))
        return [w(spans[0][0] / RATE, spans[0][1] / RATE - 0.7, "aaaaah")]

    recover([region], placed, stretched_to_the_end)
    assert [packed for _, packed in calls] == [True, False]


def test_a_region_with_far_fewer_words_than_its_length_implies_is_read_whole() -> None:
    # 3.3 s of speech that came back as one word (a neighbour's "Now," the alignment put
    # there): no second of it lies far from that word, yet it was not heard.
    region = (0, round(3.3 * RATE))
    assert unheard([region], [[w(1.25, 2.2, "Now,")]]) == [(0, region)]
    # The same region with a sentence in it, or a short one with a word, is heard.
    sentence = [w(0.1 + 0.3 * k, 0.35 + 0.3 * k) for k in range(10)]
    assert unheard([region], [sentence]) == []
    assert unheard([(0, round(1.8 * RATE))], [[w(0.4, 1.0, "budget")]]) == []
    # Slow speech at one word in 1.5 s is not sparse.
    slow = [
        w(0.2, 0.8, "tomorrow"),
        w(1.7, 2.3, "morning"),
        w(3.2, 3.8, "maybe"),
        w(4.7, 5.3, "later"),
    ]
    assert unheard([(0, 6 * RATE)], [slow]) == []


def test_a_skipped_turn_inside_a_sparse_region_is_read_after_the_region_was_read_alone() -> None:
    # One 13 s region holds two turns: slow speech (five words in its first 6 s) and,
    # after a short pause, a whispered turn. Read whole, alone, it still gives only the
    # slow words: the region stays sparse, and reading it whole again would give the
    # same. What its words do not reach (the whispered turn) is read next.
    region = (0, 13 * RATE)
    slow = [w(1.0 + 1.0 * k, 1.8 + 1.0 * k, f"slow{k}") for k in range(5)]
    calls: list[tuple[list[tuple[int, int]], bool]] = []

    def read_again(spans: list[tuple[int, int]], packed: bool) -> list[Word]:
        calls.append((spans, packed))
        if spans == [region]:
            return list(slow)
        a = spans[0][0] / RATE
        return [w(a + 0.5 + 0.4 * k, a + 0.8 + 0.4 * k, f"whisper{k}") for k in range(8)]

    out = recover([region], [[]], read_again)
    assert calls[:2] == [([region], True), ([region], False)]
    assert len(calls) == 3
    (stretch,) = calls[2][0]
    assert 5.8 * RATE <= stretch[0] <= 6.5 * RATE and stretch[1] == region[1]
    assert [x.text for x in out[0]] == [f"slow{k}" for k in range(5)] + [
        f"whisper{k}" for k in range(8)
    ]
    # Without a reading alone the whole sparse region is still what is read again.
    assert unheard([region], [slow]) == [(0, region)]
    assert unheard([region], [slow], read_alone={region}) == [(0, (stretch[0], region[1]))]


def said(text: str, start: float, per_word: float) -> list[Word]:
    return [
        w(start + i * per_word, start + (i + 1) * per_word, t) for i, t in enumerate(text.split())
    ]


def test_a_sentence_the_decoder_looped_on_is_kept_once() -> None:
    sentence = "The audit found three problems with how we store passwords."
    # The loop's copy is squeezed by the alignment into the end of the audio.
    looped = [*said(sentence, 1.0, 0.3), *said(sentence, 4.0, 0.0), w(4.2, 4.5, "Next")]
    kept = unrepeated(looped)
    assert " ".join(x.text for x in kept) == sentence + " Next"
    # Three times over: both copies go.
    thrice = [*said(sentence, 1.0, 0.3), *said(sentence, 4.0, 0.01), *said(sentence, 4.1, 0.01)]
    assert len(unrepeated(thrice)) == 10


def test_words_said_twice_in_their_own_time_and_short_repeats_are_kept() -> None:
    twice = [*said("we need to ship it", 0.0, 0.3), *said("we need to ship it", 1.6, 0.3)]
    assert unrepeated(twice) == twice  # a speaker repeating himself takes as long
    stammer = said("I think I think we should go", 0.0, 0.3)
    stammer[2:4] = said("I think", 0.6, 0.0)
    assert unrepeated(stammer) == stammer  # two words are not a loop
    assert unrepeated([]) == []


def test_short_words_stretched_over_a_skipped_turn_do_not_hide_it() -> None:
    # 0-3.4 s: a whispered turn the decoder skipped; the next speaker's "On the" was
    # put over it by the alignment, each word well under MAX_WORD_S but far longer
    # than two or three letters take to say.
    region = (0, 5 * RATE)
    words = [w(0.4, 1.0, "On"), w(1.0, 2.5, "On"), w(2.5, 3.3, "the"), w(3.4, 3.7, "whole")]
    words += [w(3.7 + 0.3 * i, 4.0 + 0.3 * i, "type") for i in range(4)]
    missing = unheard([region], [words])
    assert missing and missing[0][1][0] == 0 and missing[0][1][1] >= round(3.3 * RATE)
    # Words said at their own pace account for their audio, slow ones included.
    paced = [w(0.0, 0.3, "On"), w(0.4, 0.6, "the"), w(0.7, 1.6, "considered"), w(1.7, 2.2, "I")]
    assert unheard([(0, round(2.3 * RATE))], [paced]) == []


def heard(start: float, end: float, p: float, text: str = "word") -> Word:
    return Word(start=start, end=end, text=text, probability=p)


def sure(p: float, text: str = "word", at: float = 0.0) -> Word:
    return heard(at, at + 0.3, p, text)


def test_regions_read_in_doubt_are_those_whose_words_are_unsure_on_average() -> None:
    regions = [
        [sure(0.9), sure(0.2)],  # 0.55: sure enough
        [sure(0.2), sure(0.3), sure(0.99, "...")],  # 0.25; a lone mark counts for nothing
        [],  # nothing read: the completeness check's business, not a doubt
        [sure(0.99, "...")],
        [sure(DOUBTED_MEAN_P - 0.01)],
    ]
    assert doubted(regions) == [1, 4]
    assert doubted(regions, least=0.6) == [0, 1, 4]
    assert confidence(regions[1]) == 0.25 and confidence(regions[3]) is None


def test_a_doubted_stretch_takes_its_reading_again_when_that_holds_a_word() -> None:
    words = [heard(0.0, 0.5, 0.9, "we"), heard(1.0, 2.0, 0.6, "montree"), heard(3.0, 3.5, 0.9)]
    span = (round(0.5 * RATE), round(3.0 * RATE))
    # Read again less sure of itself, it still replaces the reading in doubt.
    again = [heard(1.0, 1.8, 0.3, "montreal"), heard(2.0, 2.8, 0.4, "aligner")]
    assert [x.text for x in replaced_if_said(words, span, again)] == [
        "we",
        "montreal",
        "aligner",
        "word",
    ]
    # Nothing read again, or marks alone: what was read stays.
    assert replaced_if_said(words, span, []) == words
    assert replaced_if_said(words, span, [heard(1.0, 2.0, 0.9, "...")]) == words
    # A run the reading again said twice over the stretch is put in once.
    loop = [heard(1.0 + 0.2 * i, 1.2 + 0.2 * i, 0.5, t) for i, t in enumerate(["a", "b", "c"])]
    loop += [heard(1.6 + 0.05 * i, 1.65 + 0.05 * i, 0.5, t) for i, t in enumerate(["a", "b", "c"])]
    assert [x.text for x in replaced_if_said(words, span, loop)] == ["we", "a", "b", "c", "word"]


def test_a_drawn_out_utterance_read_in_doubt_beside_sure_words_is_read_again() -> None:
    # A neighbour's words read well, then "montreal forced aligner" drawn out over 7 s
    # and read as a few unsure words among "..." marks, then sure words again.
    words = [heard(0.0, 0.4, 0.99, "we"), heard(0.4, 0.8, 0.97, "talk"), heard(0.8, 1.2, 0.97)]
    words += [heard(1.4, 1.6, 0.02, "Bye"), heard(2.0, 2.1, 0.8, ".")]
    words += [heard(4.0 + 0.2 * i, 4.2 + 0.2 * i, 0.9, "...") for i in range(6)]
    words += [heard(6.0, 6.2, 0.03, "or"), heard(6.6, 8.2, 0.3, "stilliner")]
    words += [heard(8.3, 8.6, 0.95, "we"), heard(8.6, 9.0, 0.95, "still")]
    region = (0, 10 * RATE)
    assert doubted([words]) == []  # its mean is 0.65: the region as a whole seems sure
    assert doubted_stretches([region], [words]) == [(0, (round(1.2 * RATE), round(8.3 * RATE)))]
    # At either end of a region the stretch runs to the region's edge.
    tail = [heard(0.1 * i, 0.1 * i + 0.1, 0.9) for i in range(3)]
    tail += [heard(1.0, 1.5, 0.1, "un"), heard(2.0, 3.5, 0.2, "sure")]
    assert doubted_stretches([region], [tail]) == [(0, (round(0.3 * RATE), 10 * RATE))]


def test_short_runs_and_runs_of_marks_alone_are_not_doubted() -> None:
    region = (0, 10 * RATE)
    short = [heard(0.0, 0.5, 0.9), heard(0.6, 1.0, 0.2), heard(1.0, 1.5, 0.1), heard(2.0, 3.0, 0.9)]
    marks = [heard(0.0, 0.5, 0.9), *(heard(1.0 + i, 1.5 + i, 0.9, "...") for i in range(4))]
    marks.append(heard(5.0, 6.0, 0.9))
    sure_words = [heard(0.0, 4.0, 0.9), heard(4.0, 8.0, 0.8)]
    assert doubted_stretches([region] * 3, [short, marks, sure_words]) == []
    # A region doubted whole is read again whole, once.
    unsure = [heard(1.0, 2.0, 0.1), heard(2.0, 4.0, 0.2)]
    second = (20 * RATE, 30 * RATE)
    assert doubted_stretches([region, second], [sure_words, unsure]) == [(1, second)]
    # ... when it lasts as long as a doubted run must: one short unsure word is not.
    blip = (40 * RATE, round(41.5 * RATE))
    assert doubted_stretches([blip], [[heard(40.2, 41.2, 0.1)]]) == []
    assert doubted_stretches([blip], [[heard(40.2, 41.2, 0.1)]], min_run_s=1.5) == [(0, blip)]
