"""The vector cache: repeated questions and sentences are not embedded again."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexing_helpers import settings_in
from rag_cli.indexer import index_paths
from rag_cli.retrieve.search import Searcher
from rag_cli.store import vector_cache
from rag_cli.store.vector_cache import VECTOR_CACHE, CachingEmbedder, VectorCache
from rag_cli.testing.fakes import HashEmbedder


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed_documents(self, texts):
        self.embedded += list(texts)
        return super().embed_documents(texts)

    def embed_query(self, text):
        self.embedded.append(text)
        return super().embed_query(text)


def test_repeats_are_answered_from_the_cache_and_survive_reopening(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachingEmbedder(inner, VectorCache(tmp_path / VECTOR_CACHE, "m|8|"))
    first = cached.embed_documents(["a sentence", "another one", "a sentence"])
    assert inner.embedded == ["a sentence", "another one"], "each missing text once, in one batch"
    again = cached.embed_documents(["another one", "a third", "a sentence"])
    assert inner.embedded[2:] == ["a third"]
    assert again[0] == first[1] and again[2] == first[0] == inner.embed_documents(["a sentence"])[0]
    question = cached.embed_query("how often?")
    reopened = CachingEmbedder(CountingEmbedder(), VectorCache(tmp_path / VECTOR_CACHE, "m|8|"))
    assert reopened.embed_query("how often?") == question and reopened.inner.embedded == []


def test_namespaces_and_kinds_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / VECTOR_CACHE
    CachingEmbedder(HashEmbedder(), VectorCache(path, "model-a")).embed_query("same text")
    other = CachingEmbedder(CountingEmbedder(), VectorCache(path, "model-b"))
    other.embed_query("same text")
    other.embed_documents(["same text"])  # a sentence is not a question (a query prefix may differ)
    assert other.inner.embedded == ["same text", "same text"]


def test_the_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_cache, "MAX_ROWS", 10)
    cache = VectorCache(tmp_path / VECTOR_CACHE, "m")
    cached = CachingEmbedder(HashEmbedder(), cache)
    for i in range(25):
        cached.embed_documents([f"text {i}"])
    rows = cache._connect().execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    assert rows <= 10
    assert cache.get_many("text", ["text 24"]) and not cache.get_many("text", ["text 0"]), "the oldest go first"


def test_an_unwritable_cache_is_not_used(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachingEmbedder(inner, VectorCache(tmp_path / "missing" / VECTOR_CACHE, "m"))
    assert cached.embed_query("q") == inner.embed_query("q")


def test_the_searcher_caches_unless_told_not_to(tmp_path: Path, samples: Path) -> None:
    settings = settings_in(tmp_path, embedding__backend="hash")
    index_paths(settings, [samples])
    searcher = Searcher(settings)
    assert isinstance(searcher.embedder, CachingEmbedder)
    hits, _ = searcher.search("How often should I feed my starter?", 3)
    assert (settings.index_dir / VECTOR_CACHE).is_file()
    again, _ = Searcher(settings).search("How often should I feed my starter?", 3)
    assert [h.chunk_id for h in again] == [h.chunk_id for h in hits]
    plain = Searcher(settings.with_values({"embedding.cache": False}, "test"))
    assert not isinstance(plain.embedder, CachingEmbedder)
