"""Retrieval: embed the question with the index's model, search the vector store with filters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rag_cli.config import Settings
from rag_cli.errors import IndexMismatch
from rag_cli.index_dir import IndexPaths
from rag_cli.retrieve.filters import Filter
from rag_cli.store.chroma import ChromaStore, StoredChunk
from rag_cli.store.embedders import Embedder, make_embedder

_QUERY_KEYS = ("embedding.backend", "embedding.model", "embedding.dimension", "embedding.query_prefix",
               "embedding.document_prefix")


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
        diffs = [f"{k}: index has {recorded.get(k)!r}, settings say {current[k]!r}"
                 for k in _QUERY_KEYS if recorded and recorded.get(k) != current[k]]
        if diffs:
            raise IndexMismatch(f"the index in {self.paths.root} was built with another embedding setup "
                                f"({'; '.join(diffs)})",
                                hint="run `rag index --rebuild` to rebuild it, or set the values it was built with")
        self.store = ChromaStore(self.paths.chroma)
        self.fingerprint = f"{self.updated}:{len(self._documents)}"

    def search(self, question: str, k: int, where: Filter | None = None) -> tuple[list[Hit], dict[str, float]]:
        t0 = time.perf_counter()
        vector = self.embedder.embed_query(question)
        t1 = time.perf_counter()
        clause = where.to_where(self._documents) if where and not where.empty else None
        stored = self.store.query(vector, k, clause)
        t2 = time.perf_counter()
        hits = [Hit.from_stored(i + 1, s) for i, s in enumerate(stored)]
        return hits, {"embed": t1 - t0, "retrieve": t2 - t1}
