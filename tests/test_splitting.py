"""Cutting spans at paragraph, sentence, line and token boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from helpers_ingest import real_counter, uncovered
from rag_cli.ingest.splitting import lines, paragraphs, sentences, token_windows, trim


def texts(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


def sentence_texts(text: str) -> list[str]:
    return texts(text, sentences(text, 0, len(text)))


def assert_trimmed_spans_inside(text: str, spans: list[tuple[int, int]], start: int, end: int) -> None:
    for s, e in spans:
        assert start <= s < e <= end
        assert not text[s].isspace() and not text[e - 1].isspace()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "spans are in order and do not overlap"


# -- trim ---------------------------------------------------------------------------------

def test_trim_drops_surrounding_whitespace_and_keeps_offsets():
    text = "  \n hello world \t\n"
    s, e = trim(text, 0, len(text))
    assert text[s:e] == "hello world"
    assert (s, e) == (4, 15)


def test_trim_of_whitespace_is_none():
    assert trim("a   \n\t b", 1, 7) is None
    assert trim("abc", 2, 2) is None


# -- paragraphs and lines -----------------------------------------------------------------

def test_paragraphs_split_on_blank_lines_including_lines_of_spaces():
    text = "Alpha beta.\nstill alpha.\n\n\nGamma delta.\n   \t\nEpsilon.\nZeta.\n"
    assert texts(text, paragraphs(text, 0, len(text))) == [
        "Alpha beta.\nstill alpha.", "Gamma delta.", "Epsilon.\nZeta."]


def test_paragraphs_of_a_sub_span_point_into_the_original_text():
    text = "xxxx\n\nfirst para\n\nsecond para\n\nyyyy"
    start, end = text.index("first"), text.index("\n\nyyyy")
    spans = paragraphs(text, start, end)
    assert texts(text, spans) == ["first para", "second para"]
    assert_trimmed_spans_inside(text, spans, start, end)


def test_paragraphs_of_blank_text_are_empty():
    assert paragraphs("\n\n  \n\t", 0, 5) == []


def test_lines_skip_blank_lines_and_trim_indentation():
    text = "def f():\n    return 1\n\n  \nx = 2"
    spans = lines(text, 0, len(text))
    assert texts(text, spans) == ["def f():", "return 1", "x = 2"]
    assert_trimmed_spans_inside(text, spans, 0, len(text))


# -- sentences ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith went home. He slept.", ["Dr. Smith went home.", "He slept."]),
    ("The book by J. R. R. Tolkien is long. Read it anyway.",
     ["The book by J. R. R. Tolkien is long.", "Read it anyway."]),
    ("Growth was 3.5 percent. Then it fell.", ["Growth was 3.5 percent.", "Then it fell."]),
    ("Use a tool, e.g. A hammer. Done.", ["Use a tool, e.g. A hammer.", "Done."]),
    ("Use a tool, i.e. the hammer. Done.", ["Use a tool, i.e. the hammer.", "Done."]),
    ("It weighs approx. five kilos. That is heavy.", ["It weighs approx. five kilos.", "That is heavy."]),
    ("See Fig. 3 for the curve. It rises.", ["See Fig. 3 for the curve.", "It rises."]),
    ("The U.S. Army arrived. They left.", ["The U.S. Army arrived.", "They left."]),
    ("Mix well! Then rest? Yes.", ["Mix well!", "Then rest?", "Yes."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("(It was late.) We went home.", ["(It was late.)", "We went home."]),
    ("Wait... What happened?", ["Wait...", "What happened?"]),
    ("An ellipsis… Next one.", ["An ellipsis…", "Next one."]),
    ("Born in 1990. Died in 2050.", ["Born in 1990.", "Died in 2050."]),
    ("Version 2.0.1 is out. Upgrade now.", ["Version 2.0.1 is out.", "Upgrade now."]),
    ("日本語です。次の文！最後", ["日本語です。", "次の文！", "最後"]),
])
def test_sentences(text, expected):
    assert sentence_texts(text) == expected


def test_a_full_stop_before_a_lowercase_word_does_not_end_a_sentence():
    assert sentence_texts("The results were good. but not great. And then?") == [
        "The results were good. but not great.", "And then?"]


def test_no_cut_without_whitespace_after_the_full_stop():
    # "example.com", "3.5" and "a.b" are not sentence ends.
    assert sentence_texts("Visit example.com today. Or not.") == ["Visit example.com today.", "Or not."]


def test_blank_lines_end_a_sentence_even_without_punctuation():
    text = "A heading without a stop\n\nThe first sentence. The second\none on two lines."
    assert sentence_texts(text) == [
        "A heading without a stop", "The first sentence.", "The second\none on two lines."]


def test_sentences_of_a_sub_span_are_trimmed_and_point_into_the_original():
    text = "Before. Mr. Jones arrived at 5.30 p.m. on Monday. He left.   After."
    start, end = text.index("Mr."), text.index("   After")
    spans = sentences(text, start, end)
    assert texts(text, spans) == ["Mr. Jones arrived at 5.30 p.m. on Monday.", "He left."]
    assert_trimmed_spans_inside(text, spans, start, end)


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab .!?\n\t\"')…。E")), max_size=80), data=st.data())
def test_splitters_always_return_trimmed_ordered_spans_covering_the_text(text, data):
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    for split in (paragraphs, sentences, lines):
        spans = split(text, start, end)
        assert_trimmed_spans_inside(text, spans, start, end)
        # Cutting never drops text: every non-whitespace character of the span is in a piece.
        missing = [i for i in uncovered(text, spans) if start <= i < end]
        assert not missing, (split.__name__, missing)


# -- token windows ------------------------------------------------------------------------

PROSE = (
    "Sourdough bread is leavened by a culture of wild yeast and lactic acid bacteria. "
    "The starter is fed with flour and water every day, and it doubles in four to six hours "
    "when it is healthy. A loaf needs about 75 percent hydration, a long bulk fermentation, "
    "shaping, an overnight proof in the fridge, and a very hot oven with steam for the first "
    "twenty minutes. Extraordinarily underappreciated techniques include the autolyse.\n\n"
    "Bake until the crust is deep brown; the crumb should be open and glossy."
)


@pytest.fixture(scope="module")
def counter():
    return real_counter()


@pytest.mark.parametrize("budget", [5, 16, 40])
def test_token_windows_respect_the_budget_and_cover_the_text(counter, budget):
    spans = token_windows(PROSE, 0, len(PROSE), counter, budget)
    assert len(spans) > 1
    for s, e in spans:
        assert counter.count(PROSE[s:e]) <= budget
        assert PROSE[s:e] == PROSE[s:e].strip()
    assert not uncovered(PROSE, spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "no overlap asked, none given"


def test_token_windows_prefer_to_end_at_a_word_boundary(counter):
    spans = token_windows(PROSE, 0, len(PROSE), counter, 16)
    for _, e in spans[:-1]:
        assert not PROSE[e].isalnum() or not PROSE[e - 1].isalnum(), PROSE[e - 10:e + 10]


@pytest.mark.parametrize("overlap", [1, 4, 8])
def test_token_windows_overlap_by_at_most_the_overlap(counter, overlap):
    budget = 20
    spans = token_windows(PROSE, 0, len(PROSE), counter, budget, overlap)
    assert not uncovered(PROSE, spans)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s1 < s2 < e1 < e2, "each window starts inside the previous one and goes further"
        shared = PROSE[s2:e1]
        assert 1 <= counter.count(shared) <= overlap, shared
        assert not PROSE[s2 - 1].isalnum(), "an overlap starts at a word, not inside one"
    for s, e in spans:
        assert counter.count(PROSE[s:e]) <= budget


def test_token_windows_of_a_sub_span(counter):
    start, end = PROSE.index("The starter"), PROSE.index(" A loaf")
    spans = token_windows(PROSE, start, end, counter, 6, 2)
    assert spans[0][0] == start and spans[-1][1] == end
    assert all(start <= s < e <= end for s, e in spans)
    assert not [i for i in uncovered(PROSE, spans) if start <= i < end]


def test_token_windows_of_a_single_long_word_cut_inside_it(counter):
    text = "x" + "abcdefghij" * 9  # under 100 characters: longer words are a single [UNK] token
    assert counter.count(text) > 8
    spans = token_windows(text, 0, len(text), counter, 8)
    assert len(spans) > 1
    assert "".join(texts(text, spans)) == text  # contiguous, nothing lost, nothing repeated


def test_token_windows_of_whitespace_and_untokenizable_text(counter):
    assert token_windows("   \n\t ", 0, 6, counter, 10) == []
    text = "  \u200b\u200b  "  # zero-width spaces: no tokens, but not whitespace to str.isspace
    assert counter.token_spans(text) == []
    assert texts(text, token_windows(text, 0, len(text), counter, 10)) == ["\u200b\u200b"]


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.sampled_from(
        "the flour water dough Größe 日本語 e.g. 3.5 antidisestablishmentarianism ... — https://x.io/a?b=c".split()
        + ["\n\n", "\n"]), min_size=0, max_size=120),
    budget=st.integers(1, 64),
    data=st.data(),
)
def test_token_windows_properties(words, budget, data):
    counter = real_counter()
    text = " ".join(words)
    overlap = data.draw(st.integers(0, max(0, budget - 1)))
    spans = token_windows(text, 0, len(text), counter, budget, overlap)
    assert not uncovered(text, spans)
    assert bool(spans) == bool(text.strip())
    for s, e in spans:
        assert text[s:e] == text[s:e].strip() != ""
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    assert starts == sorted(starts) and ends == sorted(ends)
