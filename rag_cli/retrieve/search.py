"""Retrieval: embed the question with the index's model, search the vector store with filters."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rag_cli.config import Settings
from rag_cli.index_dir import IndexPaths, check_build
from rag_cli.retrieve.filters import Filter
from rag_cli.store.chroma import ChromaStore, StoredChunk
from rag_cli.store.embedders import Embedder, make_embedder
from rag_cli.store.keyword import KeywordIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk. ``score`` is the cosine similarity of question and chunk."""

    rank: int
    chunk_id: str
    doc_id: str
    source: str
    kind: str
    text: str
    score: float
    index: int
    start: int
    end: int
    heading: str = ""
    title: str = ""
    page_start: int | None = None
    page_end: int | None = None

    @classmethod
    def from_stored(cls, rank: int, stored: StoredChunk) -> "Hit":
        m: dict[str, Any] = stored.metadata
        return cls(rank=rank, chunk_id=stored.chunk_id, doc_id=m.get("doc_id", ""), source=m.get("source", ""),
                   kind=m.get("kind", ""), text=stored.text, score=1.0 - float(stored.distance or 0.0),
                   index=int(m.get("index", 0)), start=int(m.get("start", 0)), end=int(m.get("end", 0)),
                   heading=m.get("heading", ""), title=m.get("title", ""), page_start=m.get("page_start"),
                   page_end=m.get("page_end"))

    def to_dict(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "doc_id": self.doc_id, "path": self.source, "kind": self.kind,
                "page_start": self.page_start, "page_end": self.page_end, "heading": self.heading,
                "score": round(self.score, 4), "text": self.text}


class Searcher:
    """Opens an index for reading and answers searches. The embedding model loads on first use."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.paths = IndexPaths(settings.index_dir)
        manifest = self.paths.open_manifest()  # IndexNotFound when there is none
        try:
            recorded = manifest.get_meta("build") or {}
            self.updated = manifest.get_meta("updated")
            self._documents = [f"{d}\0{p}" for d, p in manifest.documents()]
        finally:
            manifest.close()
        e = settings.embedding
        self.embedder = embedder or make_embedder(e.backend, e.model, base_dir=settings.base_dir, device=e.device,
                                                  batch_size=e.batch_size, query_prefix=e.query_prefix)
        current = {"embedding.backend": e.backend, "embedding.model": self.embedder.name,
                   "embedding.dimension": self.embedder.dimension, "embedding.query_prefix": e.query_prefix,
                   "embedding.document_prefix": e.document_prefix}
        check_build(recorded, current, self.paths.root)  # searching needs only the embedding to match
        self.store = ChromaStore(self.paths.chroma)
        self.fingerprint = f"{self.updated}:{len(self._documents)}"
        self._keyword: KeywordIndex | None = None

    def keyword_index(self) -> KeywordIndex:
        """The saved keyword index when it matches the store, else one built now in memory."""
        if self._keyword is None:
            saved = KeywordIndex.load(self.paths.keyword)
            if saved is not None and saved.tag == self.updated:
                self._keyword = saved
            else:
                log.info("keyword index missing or stale (an index run was interrupted or is running); "
                         "building it in memory")
                ids, texts, metas = self.store.all_chunks()
                self._keyword = KeywordIndex.build(ids, texts, metas, tag=self.updated)
        return self._keyword

    def search(self, question: str, k: int, where: Filter | None = None,
               mode: str | None = None) -> tuple[list[Hit], dict[str, float]]:
        """The best ``k`` chunks for ``question``. Every hit's ``score`` is its cosine similarity
        to the question, whatever the mode; the order is the mode's."""
        r = self.settings.retrieval
        mode = mode or r.mode
        t0 = time.perf_counter()
        vector = self.embedder.embed_query(question)
        t1 = time.perf_counter()
        where = where if where and not where.empty else None
        depth = max(k, r.candidates) if mode == "hybrid" else k
        dense: list[StoredChunk] = []
        if mode in ("dense", "hybrid"):
            dense = self.store.query(vector, depth, where.to_where(self._documents) if where else None)
        keyword: list[tuple[str, float]] = []
        if mode in ("keyword", "hybrid"):
            keyword = self.keyword_index().search(question, depth, where.matches if where else None)
        if mode == "dense":
            ranked = [s.chunk_id for s in dense]
        elif mode == "keyword":
            ranked = [cid for cid, _ in keyword]
        else:
            ranked = reciprocal_rank_fusion([[s.chunk_id for s in dense], [cid for cid, _ in keyword]], r.rrf_k)
        ranked = ranked[:k]
        by_id = {s.chunk_id: s for s in dense}
        missing = [cid for cid in ranked if cid not in by_id]
        if missing:  # keyword-only hits: fetch text and vector to give them a cosine score
            for cid, (stored, vec) in self.store.fetch(missing).items():
                by_id[cid] = StoredChunk(cid, stored.text, stored.metadata, 1.0 - _dot(vector, vec))
        hits = [Hit.from_stored(i + 1, by_id[cid]) for i, cid in enumerate(c for c in ranked if c in by_id)]
        t2 = time.perf_counter()
        return hits, {"embed": t1 - t0, "retrieve": t2 - t1}


def reciprocal_rank_fusion(rankings: list[list[str]], k: int) -> list[str]:
    """Ids ordered by the sum of 1 / (k + rank) over the rankings they appear in (rank from 1);
    ties keep the order of first appearance."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    order = {cid: i for i, cid in enumerate(dict.fromkeys(c for ranking in rankings for c in ranking))}
    return sorted(scores, key=lambda c: (-scores[c], order[c]))


def _dot(a: list[float], b: list[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b)))
