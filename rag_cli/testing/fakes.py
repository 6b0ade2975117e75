"""In-process fakes: deterministic, fast, no model files."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from rag_cli.models import Generation


class HashEmbedder:
    """Bag-of-words vectors from hashed lowercase words: texts that share words are close.

    Good enough to test retrieval plumbing without loading a model.
    """

    name = "hash-embedder"
    loaded = True  # no model

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

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts_embedded += len(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(self.query_prefix + text)


class ScriptedGenerator:
    """A generator that answers from a script: a fixed text, or a function of the messages.

    Tokens are counted as whitespace-separated words. ``fail`` raises the given error on use.
    """

    def __init__(self, reply="The answer is in the documents [1].", *, context_size: int = 2048,
                 name: str = "scripted", fail: Exception | None = None, style: str = "chat") -> None:
        self.reply = reply
        self.style = style
        self.context_size = context_size
        self.name = name
        self.fail = fail
        self.calls: list[list[dict[str, str]]] = []

    def warm_up(self) -> None:
        if self.fail is not None:
            raise self.fail

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages, *, max_tokens, temperature, on_text=None):
        self.warm_up()
        self.calls.append(list(messages))
        prompt = sum(self.count_tokens(m["content"]) for m in messages)
        assert prompt + max_tokens <= self.context_size, "prompt overflows the context window"
        text = self.reply(messages) if callable(self.reply) else self.reply
        if on_text:
            for word in text.split(" "):
                on_text(word + " ")
        return Generation(text=text, prompt_tokens=prompt, completion_tokens=self.count_tokens(text),
                          seconds=0.0, model=self.name)
