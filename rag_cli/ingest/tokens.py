"""Counting tokens with the embedding model's own tokenizer (the Rust `tokenizers` library).

Chunk budgets are measured in these tokens so that no chunk is ever truncated by the
embedding model. Loading takes milliseconds and needs no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

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
        if not texts:
            return []
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self._tok.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]


@lru_cache(maxsize=4)
def load_token_counter(model: str, base_dir: str | None = None) -> HFTokenCounter:
    """The token counter of an embedding model named as in ``embedding.model``."""
    from rag_cli.model_files import resolve_embedding_model

    files = resolve_embedding_model(model, Path(base_dir) if base_dir else None)
    return HFTokenCounter(name=files.name, path=files.tokenizer_file, max_seq_length=files.max_seq_length)
