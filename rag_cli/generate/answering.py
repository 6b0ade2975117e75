"""After generation: refusals recognised, citations checked against the sources given.

``check_answer`` is the whole check, one pure function of the generated text and the sources the
model was given; the functions it runs are here too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag_cli.generate.prompts import Source, plain_text
from rag_cli.models import Route

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def is_refusal(answer: str, refusal: str) -> bool:
    """The model gave the fixed refusal, or began with its first clause or "I don't know"."""
    a = _norm(answer)
    if not a:
        return True
    full = _norm(refusal)
    first = _norm(re.split(r"[:.;]", refusal, maxsplit=1)[0]) or full
    return a.startswith((first, "i don't know", "i do not know")) or (bool(full) and full in a)


def clean_citations(answer: str, sources: int) -> tuple[str, set[int], int]:
    """The answer with citations to sources that do not exist removed, the numbers cited,
    and how many were removed."""
    cited: set[int] = set()
    removed = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal removed
        keep = []
        for part in match.group(1).split(","):
            n = int(part)
            if 1 <= n <= sources:
                keep.append(n)
                cited.add(n)
            else:
                removed += 1
        return "[" + ", ".join(str(n) for n in keep) + "]" if keep else ""

    text = _CITATION.sub(fix, answer)
    text = re.sub(r"[ \t]+([.,;:])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip(), cited, removed


def strip_citations(answer: str) -> str:
    """The answer without its [n] markers (what is scored against gold answers)."""
    return _CITATION.sub("", answer)


_PREAMBLE = re.compile(r"^\s*(?:the\s+)?(?:short\s+)?answer(?:\s+is)?\s*:\s*", re.I)


_SOURCE_TAG = re.compile(r"</?\s*source\b[^>]*>", re.I)
_INLINE_TAG = re.compile(r"</?(?:b|i|em|strong|u|sub|sup|span|p)\s*>", re.I)
_LIST_MARK = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")  # not "A.": that may be a name ("E. coli")


def tidy(answer: str) -> str:
    """The answer without a leading "The answer is:" or list mark ("1.", "-"), and without
    echoed ``<source ...>`` or inline HTML tags (habits of small models)."""
    untagged = _INLINE_TAG.sub("", _SOURCE_TAG.sub("", answer)).strip()
    answer = untagged if untagged else answer
    stripped = _LIST_MARK.sub("", _PREAMBLE.sub("", answer, count=1), count=1)
    return stripped if stripped.strip() else answer


def route(question: str, top_score: float, *, fast: str, strong: str, max_words: int,
          min_score: float) -> tuple[str, Route]:
    """(model, reason): a short question with a confident retrieval is easy and goes to the fast
    model; anything else goes to the strong model when one is configured."""
    if not strong:
        return fast, Route.DEFAULT
    easy = len(question.split()) <= max_words and top_score >= min_score
    return (fast, Route.EASY) if easy else (strong, Route.HARD)


_STOPWORDS = frozenset(
    "the a an and or of to in on at for by with from as is are was were be been being it its this that these "
    "those which who whom what when where why how not no yes do does did has have had can could should would "
    "will shall may might must i you he she we they them their there here than then so such also into about "
    "answer source sources based according".split()
)


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", unicodedata.normalize("NFKC", text).lower())
            if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())]


def support(answer: str, texts: list[str]) -> list[float]:
    """For each source text, the share of the answer's content words it contains."""
    words = set(content_words(answer))
    if not words:
        return [0.0 for _ in texts]
    return [len(words & set(content_words(t))) / len(words) for t in texts]


def _best_supported(shares: list[float], min_support: float) -> set[int]:
    best = max(shares, default=0.0)
    if best < min_support:
        return set()
    return {i + 1 for i, share in enumerate(shares) if share == best}


def verify_citations(answer: str, texts: list[str], cited: set[int], *, min_support: float = 0.5,
                     shares: list[float] | None = None) -> set[int]:
    """The citations, checked against the sources: when the answer cites nothing, or cites
    sources that hold less of it than another source does, credit the best-supporting ones.
    ``shares`` is ``support(answer, texts)`` when the caller has it already."""
    shares = support(answer, texts) if shares is None else shares
    if cited and max(shares[n - 1] for n in cited) >= max(shares, default=0.0):
        return cited
    return _best_supported(shares, min_support) or cited


def _span_tokens(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def snap_to_span(answer: str, texts: list[str], *, max_words: int = 12,
                 min_f1: float = 0.6) -> tuple[int, str] | None:
    """(index of the text, span) of the span of ``texts`` closest to a short ``answer`` by
    token F1 (SQuAD's measure), so a small model's near-copy becomes the sources' exact words;
    None when the answer is longer than ``max_words`` or no span reaches ``min_f1``. ``[n]``
    citation markers are not part of the answer. Spans are at most a few words longer than
    the answer; the shortest of equal F1 wins."""
    from collections import Counter

    want = _norm(strip_citations(answer)).split()
    if not want or len(want) > max_words:
        return None
    wanted = Counter(want)
    best: tuple[float, int, str] = (0.0, 0, "")  # F1, text, span
    for t, text in enumerate(texts):
        spans = _span_tokens(text)
        words = [_norm(text[a:b]) for a, b in spans]
        for i in range(len(spans)):
            if not any(w in wanted and w not in _STOPWORDS for w in words[i].split()):
                continue  # a span starts on a content word of the answer ("of" alone is no answer)
            got: Counter[str] = Counter()
            for j in range(i, min(len(spans), i + len(want) + 4)):
                got.update(words[j].split())
                common = sum((got & wanted).values())
                if common == 0:
                    continue
                precision, recall = common / sum(got.values()), common / len(want)
                f1 = 2 * precision * recall / (precision + recall)
                if f1 > best[0] + 1e-9:
                    best = (f1, t, text[spans[i][0]:spans[j][1]])
    if best[0] < min_f1:
        return None
    return best[1], best[2].strip(" \t\n,.;:!?\"'()[]*_`")


@dataclass(frozen=True)
class CheckedAnswer:
    """A generated answer after ``check_answer``: the text to show and the numbers of the sources
    it cites."""

    text: str
    cited: frozenset[int]
    refused: bool = False  # the model refused: ``text`` is the fixed refusal
    removed_citations: int = 0  # citations of sources the model was not given, dropped
    extracted: bool = False  # the sources did not support the answer: ``text`` is their own sentence
    unsupported: str = ""  # the answer the extracted sentence replaced


def check_answer(generated: str, given: Sequence[Source], *, refusal: str, snap: bool = True,
                 min_support: float = 0.0,
                 extract: Callable[[], tuple[int, str] | None] | None = None) -> CheckedAnswer:
    """What `rag ask` shows for a model's text ``generated`` from the sources ``given`` (numbered
    from 1, as packed), in eight steps:

    1. a refusal (``is_refusal``) becomes the fixed ``refusal``, citing nothing;
    2. ``tidy`` drops a leading "The answer is:", a list mark and echoed tags;
    3. ``clean_citations`` drops citations of sources that were not given, and counts them;
    4. with ``snap`` (ask.snap_to_span), a short answer that nearly copies a source becomes the
       source's exact words (``snap_to_span``), cited where they stand;
    5. capitalised as the model wrote it ("Feed your starter ...");
    6. ``support``: the share of the answer's words each source holds;
    7. with ``min_support`` (ask.min_support), an answer no source supports that much (a small
       model can drift into anything) is replaced by ``extract()``: the sources' sentence closest
       to the question, as (source number, sentence), or None to keep the answer;
    8. otherwise the citations are checked against the support (``verify_citations``): an answer
       citing nothing, or the wrong source, is credited to the source that holds it.

    Pure but for ``extract``, which is called at most once and only in step 7."""
    if is_refusal(generated, refusal):
        return CheckedAnswer(text=refusal, cited=frozenset(), refused=True)
    text, cited, removed = clean_citations(tidy(generated), len(given))
    texts = [g.text for g in given]
    if snap:
        before = text
        span = snap_to_span(text, texts)
        if span is not None:  # the sources' own words for a short answer, cited where they stand
            text, cited = plain_text(span[1]), {given[span[0]].number}
            if before[:1].isupper():
                text = text[:1].upper() + text[1:]
    shares = support(text, texts)
    if min_support and max(shares, default=0.0) < min_support and extract is not None:
        best = extract()
        if best is not None:
            number, sentence = best
            return CheckedAnswer(text=sentence, cited=frozenset({number}), removed_citations=removed,
                                 extracted=True, unsupported=text)
    # Small models forget to cite, or cite the wrong number: credit the sources that hold the answer.
    # An answer trusted on ask.min_support is credited to the source that supports it most.
    cited = verify_citations(text, texts, cited, shares=shares, min_support=min_support or 0.5)
    return CheckedAnswer(text=text, cited=frozenset(cited), removed_citations=removed)
