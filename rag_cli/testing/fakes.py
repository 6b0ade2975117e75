"""In-process fakes: deterministic, fast, no model files."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Sequence


class HashEmbedder:
    """Bag-of-words vectors from hashed lowercase words: texts that share words are close.

    Good enough to test retrieval plumbing without loading a model.
    """

    name = "hash-embedder"

    def __init__(self, dimension: int = 64, query_prefix: str = "") -> None:
        self.dimension = dimension
        self.query_prefix = query_prefix
        self.calls = 0
        self.texts_embedded = 0

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            vec[int.from_bytes(digest[:4], "little") % self.dimension] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts_embedded += len(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(self.query_prefix + text)
