"""Counting tokens with the embedding model's own tokenizer (the Rust `tokenizers` library).

Chunk budgets are measured in these tokens so that no chunk is ever truncated by the
embedding model. Loading takes milliseconds and needs no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from rag_cli.errors import ModelLoadError


class TokenCounter(Protocol):
    """What a chunker needs of a tokenizer."""

    name: str
    max_tokens: int  # most content tokens one embedding input can hold (special tokens excluded)

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of every token of ``text``, in order."""
        ...


_BATCH_TEXTS = 1024  # texts encoded at a time by count_many
_BATCH_CHARS = 1 << 20  # and characters
PIECE_CHARS = 1 << 16  # a longer text is tokenized in pieces of about this many characters


@dataclass
class HFTokenCounter:
    """A Hugging Face fast tokenizer read from ``tokenizer.json``."""

    name: str
    path: Path
    max_seq_length: int

    def __post_init__(self) -> None:
        # Chunkers encode a few short texts at a time, on the indexer's reader thread: a Rust
        # thread pool per call costs more CPU than it saves and competes with the embedding model.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust library raises plain Exception
            raise ModelLoadError(f"cannot load tokenizer {self.path}: {exc}") from None
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        specials = len(tok.encode("", add_special_tokens=True).ids)
        self.max_tokens = max(8, self.max_seq_length - specials)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # In batches: an encoding holds ~100 bytes a token, so one call over every paragraph of a
        # 50 MB file would hold gigabytes at once.
        counts: list[int] = []
        batch: list[str] = []
        chars = 0
        for text in texts:
            batch.append(text)
            chars += len(text)
            if len(batch) >= _BATCH_TEXTS or chars >= _BATCH_CHARS:
                counts.extend(len(e.ids) for e in self._tok.encode_batch(batch, add_special_tokens=False))
                batch, chars = [], 0
        if batch:
            counts.extend(len(e.ids) for e in self._tok.encode_batch(batch, add_special_tokens=False))
        return counts

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [(start, end) for start, end in self._tok.encode(text, add_special_tokens=False).offsets]


@lru_cache(maxsize=4)
def load_token_counter(model: str, base_dir: str | None = None) -> HFTokenCounter:
    """The token counter of an embedding model named as in ``embedding.model``."""
    from rag_cli.model_files import resolve_embedding_model

    files = resolve_embedding_model(model, Path(base_dir) if base_dir else None)
    return HFTokenCounter(name=files.name, path=files.tokenizer_file, max_seq_length=files.max_seq_length)


def piece_ends(text: str, start: int, end: int, size: int | None = None) -> list[int]:
    """Where to cut ``text[start:end]`` into pieces of at most ``size`` (default: PIECE_CHARS)
    characters: at whitespace where the last quarter of a piece has some (so no word is cut),
    else anywhere.
    Tokenizers that split words at whitespace give the same tokens piece by piece as for the
    whole, without ever holding an encoding of the whole (~100 bytes a token)."""
    size = size or PIECE_CHARS
    ends: list[int] = []
    pos = start
    while end - pos > size:
        stop = pos + size
        cut = stop
        for i in range(stop - 1, stop - size // 4, -1):
            if text[i].isspace():
                cut = i
                break
        ends.append(cut)
        pos = cut
    ends.append(end)
    return ends


def count_capped(counter: TokenCounter, texts: Sequence[str], cap: int) -> list[int]:
    """Token counts that are exact up to ``cap``; a text with more tokens gets some number above
    ``cap``. Enough to decide whether a span fits a budget, without tokenizing all of a huge one:
    a long text is first measured by its head, cut at whitespace (so its tokens are the text's
    first ones), and only counted in full, in pieces (``piece_ends``), when the head alone fits.
    (Exact for tokenizers that split words at whitespace, short of words over 16K characters.)"""
    probe = 16 * (cap + 1) + 256  # characters: far more than `cap` tokens of any real text
    counts = [0] * len(texts)
    short = [i for i, t in enumerate(texts) if len(t) <= probe]
    for i, n in zip(short, counter.count_many([texts[i] for i in short])):
        counts[i] = n
    long = [i for i, t in enumerate(texts) if len(t) > probe]
    for i, n in zip(long, counter.count_many([_head(texts[i], probe) for i in long])):
        if n > cap:
            counts[i] = n
        else:  # mostly whitespace, or enormous words: count it all
            text = texts[i]
            ends = piece_ends(text, 0, len(text))
            counts[i] = sum(counter.count_many([text[a:b] for a, b in zip([0, *ends], ends)]))
    return counts


def _head(text: str, size: int) -> str:
    """The text's first ``size`` characters, back to the last whitespace ("" if none): a word cut
    in two could tokenize to more pieces than the whole word (which may be one [UNK])."""
    for i in range(min(size, len(text)) - 1, 0, -1):
        if text[i].isspace():
            return text[:i]
    return ""
