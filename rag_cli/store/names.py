"""Names in a question that the index never mentions: "What were Amazon's sales?" over Apple's
filings. A question about something the documents do not hold is best refused before any model
runs, and a name is the surest sign of what a question is about (`retrieval.refuse_unknown_names`).

A name is a word its writer capitalised where a sentence does not begin ("Amazon", "Beyoncé"),
of three letters or more, the rest lower case: acronyms ("WWII", "AWS", "MVPs") are left out, as
the documents often spell them out. It is known when the index holds its word, with accents
ignored, or a word one edit away (a misspelt "Goverment" is not a question about something else).
Pure functions; the vocabulary comes from the keyword index (store/keyword.py)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence

_WORD = re.compile(r"(?<![\w'’.&/-])[^\W\d_]+(?![\w&/-])")
_SENTENCE_END = ".?!:;\"“(["
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def fold(word: str) -> str:
    """``word`` in lower case without accents ("Beyoncé" -> "beyonce")."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def question_names(question: str) -> list[str]:
    """The names of ``question``, in order, each once."""
    out: list[str] = []
    for m in _WORD.finditer(question):
        word = m.group(0)
        if len(word) < 3 or not word[0].isupper() or not word[1:].islower():
            continue
        before = question[:m.start()].rstrip()
        if not before or before[-1] in _SENTENCE_END:
            continue
        if word not in out:
            out.append(word)
    return out


def _edits(word: str) -> Iterator[str]:
    """Every string one deletion, transposition, substitution or insertion away from ``word``."""
    for i in range(len(word) + 1):
        left, right = word[:i], word[i:]
        if right:
            yield left + right[1:]
            if len(right) > 1:
                yield left + right[1] + right[0] + right[2:]
            for c in _LETTERS:
                yield left + c + right[1:]
        for c in _LETTERS:
            yield left + c + right


def unknown(names: Sequence[str], vocabulary: Collection[str], tokens: Callable[[str], list[str]]) -> list[str]:
    """The ``names`` none of whose index words (``tokens``: the keyword index's own tokenizer and
    stemmer) is in ``vocabulary`` (folded words) or one edit from a word that is."""
    out = []
    for name in names:
        words = [fold(t) for t in tokens(name)]
        if words and not any(w in vocabulary or any(e in vocabulary for e in _edits(w)) for w in words):
            out.append(name)
    return out
