"""Retrieval: embed the question with the index's model, search the vector store and the keyword
index (filters applied inside both), fuse, then optionally rerank and diversify.

    question --embed--> dense top-N (Chroma, cosine)  --\\
             --BM25---> keyword top-N (chunks)          ---> fusion ---> [cross-encoder] ---> [MMR] ---> top-k
             --BM25---> document scores (documents)   --/

Hybrid fusion is ``weighted`` by default: each signal is z-normalised over the candidates and
summed with its weight (dense, keyword = 1 - dense, document). ``rrf`` (reciprocal-rank fusion)
is the alternative. The choice and the weights come from `rag eval` on the shared data
(docs/retrieval-and-chunking.md, Retrieval).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rag_cli import observe
from rag_cli.config import Settings
from rag_cli.index_dir import check_build, is_dirty
from rag_cli.index_record import open_index
from rag_cli.model_files import embedding_prefixes
from rag_cli.models import Hit, StoredChunk
from rag_cli.retrieve.filters import Filter
from rag_cli.store.chroma import VectorStore
from rag_cli.store.embedders import Embedder, embedder_from_settings
from rag_cli.store.keyword import KeywordIndex, keyword_text
from rag_cli.store.vector_cache import VECTOR_CACHE, CachingEmbedder, VectorCache

log = logging.getLogger(__name__)


class Searcher:
    """Opens an index for reading and answers searches. The embedding model loads on first use."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, reranker: Any = None) -> None:
        self.settings = settings
        self.record = open_index(settings)  # IndexNotFound, IndexCorrupt
        self.paths = self.record.paths
        self.updated = self.record.updated
        self.documents = self.record.documents()
        e = settings.embedding
        query_prefix, document_prefix = embedding_prefixes(e, settings.base_dir)
        self.embedder = embedder or embedder_from_settings(e, base_dir=settings.base_dir, query_prefix=query_prefix)
        current = {"embedding.backend": e.backend, "embedding.model": self.embedder.name,
                   "embedding.dimension": self.embedder.dimension, "embedding.query_prefix": query_prefix,
                   "embedding.document_prefix": document_prefix}
        # Searching needs only the embedding to match.
        check_build(self.record.build, current, self.record.where)
        if e.cache and not isinstance(self.embedder, CachingEmbedder):
            namespace = f"{self.embedder.name}|{self.embedder.dimension}|{query_prefix}"
            self.embedder = CachingEmbedder(self.embedder, VectorCache(self.paths.root / VECTOR_CACHE, namespace))
        self.store: VectorStore = self.record.store()
        # Changes with any index run that changed something, and with a file's mtime (filters use it).
        table = hashlib.sha256(repr(self.documents).encode()).hexdigest()[:16]
        self.fingerprint = f"{self.updated}:{len(self.documents)}:{table}"
        self._keyword: KeywordIndex | None = None
        self._reranker = reranker

    def keyword_index(self) -> KeywordIndex:
        """The saved keyword index when it matches the store, else one built now from the store's
        chunks (and saved, for an index on a server that no run is writing to)."""
        if self._keyword is None:
            saved = KeywordIndex.load(self.paths.keyword)
            if saved is not None and saved.tag == self.updated:
                self._keyword = saved
            else:
                log.info("keyword index missing or stale (an index run was interrupted or is running, or the "
                         "index is on a server and changed); building it from the store")
                ids, texts, metas = self.store.all_chunks()
                self._keyword = KeywordIndex.build(ids, texts, metas, tag=self.updated)
                if self.record.saves_keyword_index and not is_dirty(self.updated):
                    try:  # the next question on this machine reads it instead of the whole collection
                        self._keyword.save(self.paths.keyword)
                    except OSError as exc:
                        log.warning("could not save the keyword index in %s: %s", self.paths.keyword, exc)
        return self._keyword

    def coverage(self, question: str, hit: Hit) -> float | None:
        """The share of the question's words (weighted by rarity) that the hit's chunk holds, as
        BM25 sees the chunk (title and heading too); None when it cannot be told."""
        return self.keyword_index().coverage(question, keyword_text(hit.text, {"title": hit.title,
                                                                              "heading": hit.heading}))

    def unknown_names(self, question: str) -> list[str]:
        """The names in the question that no chunk holds (`retrieval.refuse_unknown_names`)."""
        return self.keyword_index().unknown_names(question)

    def evidence(self, question: str, hit: Hit) -> float:
        """How strongly ``hit`` bears on the question, the value `retrieval.min_score` tests: its
        cosine similarity plus `retrieval.coverage_weight` x its coverage of the question."""
        weight = self.settings.retrieval.coverage_weight
        if weight <= 0:
            return hit.score
        covered = self.coverage(question, hit)
        return hit.score + weight * (1.0 if covered is None else covered)

    def reranker(self) -> Any:
        if self._reranker is None and self.settings.retrieval.reranker:
            from rag_cli.retrieve.rerank import CrossEncoderReranker

            r = self.settings.retrieval
            self._reranker = CrossEncoderReranker(r.reranker, base_dir=self.settings.base_dir,
                                                  device=self.settings.embedding.device)
        return self._reranker

    def search(self, question: str, k: int, where: Filter | None = None,
               mode: str | None = None) -> tuple[list[Hit], dict[str, float]]:
        """The best ``k`` chunks for ``question``. Every hit's ``score`` is its cosine similarity
        to the question, whatever the mode; the order is the mode's.

        Timings: ``embed``, ``retrieve`` (and its parts ``retrieve.dense``, ``retrieve.keyword``,
        ``retrieve.fusion``: fusing, and fetching keyword-only hits), ``rerank``."""
        mode = mode or self.settings.retrieval.mode
        with observe.span("search", mode=mode, k=k, filtered=where is not None and not where.empty):
            return self._search(question, k, where, mode)

    def _search(self, question: str, k: int, where: Filter | None,
                mode: str) -> tuple[list[Hit], dict[str, float]]:
        r = self.settings.retrieval
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with observe.span("search.embed"):
            vector = self.embedder.embed_query(question)
        t1 = time.perf_counter()
        timings["embed"] = t1 - t0
        bound = where.bind(self.documents) if where is not None and not where.empty else None
        reranker = self.reranker()
        depth = k
        if mode == "hybrid":  # the same candidates whatever k (up to 2 x candidates): top-5 is top-5 of top-50
            depth = max(r.candidates, -(-k // 2))
        if reranker is not None:
            depth = max(depth, r.rerank_candidates)
        if r.diversity > 0:
            depth = max(depth, min(r.candidates, 4 * k))
        # One moment of the store for the dense query, the keyword index built from its chunks and
        # the vectors of keyword-only hits: no `rag index` write lands in between (ChromaStore.consistent).
        with self.store.consistent():
            dense: list[StoredChunk] = []
            if mode in ("dense", "hybrid"):
                with observe.span("search.dense", depth=depth):
                    dense = self.store.query(vector, depth, bound.where if bound else None,
                                             with_vectors=r.diversity > 0)
                timings["retrieve.dense"] = time.perf_counter() - t1
            keyword: list[tuple[str, float]] = []
            if mode in ("keyword", "hybrid"):
                t_keyword = time.perf_counter()
                with observe.span("search.keyword", depth=depth):
                    keyword = self.keyword_index().search(question, depth, bound.matches if bound else None)
                timings["retrieve.keyword"] = time.perf_counter() - t_keyword
            t_fusion = time.perf_counter()
            with observe.span("search.fusion"):  # with the document scores, and fetching keyword-only hits
                chunks = {s.chunk_id: s for s in dense}
                cosines = [(s.chunk_id, 1.0 - float(s.distance or 0.0)) for s in dense]
                if mode == "dense":
                    ranked = cosines
                elif mode == "keyword":
                    ranked = keyword
                elif r.fusion == "rrf":
                    ranked = reciprocal_rank_fusion([[s.chunk_id for s in dense], [cid for cid, _ in keyword]], r.rrf_k)
                else:
                    doc_of = {s.chunk_id: s.metadata.get("doc_id", "") for s in dense}
                    doc_scores: dict[str, float] = {}
                    if r.document_weight and keyword:
                        kw = self.keyword_index()
                        doc_of.update((cid, kw.doc_id_of(cid)) for cid, _ in keyword)
                        doc_scores = kw.document_scores(question, sorted(set(doc_of.values())))
                    ranked = weighted_fusion(cosines, keyword, r.dense_weight, doc_of, doc_scores, r.document_weight)
                vectors = {s.chunk_id: s.vector for s in dense if s.vector is not None}
                keep = max(k, r.rerank_candidates) if reranker is not None else depth if r.diversity > 0 else k
                ranked = ranked[:keep]
                missing = [cid for cid, _ in ranked if cid not in chunks]
                if missing:  # keyword-only hits: fetch text and vector to give them a cosine score
                    for cid, (stored, vec) in self.store.fetch(missing).items():
                        chunks[cid] = StoredChunk(cid, stored.text, stored.metadata, 1.0 - _dot(vector, vec), vec)
                        vectors[cid] = vec
                ranked = [(cid, score) for cid, score in ranked if cid in chunks]
        t2 = time.perf_counter()
        timings["retrieve.fusion"] = t2 - t_fusion
        timings["retrieve"] = t2 - t1
        if reranker is not None and ranked:
            with observe.span("search.rerank", candidates=len(ranked)):
                scores = reranker.score(question, [chunks[cid].text for cid, _ in ranked])
            ranked = sorted(zip((cid for cid, _ in ranked), scores), key=lambda p: -p[1])
            timings["rerank"] = time.perf_counter() - t2
        if r.diversity > 0 and len(ranked) > 1:
            ranked = maximal_marginal_relevance(ranked, vectors, k, 1.0 - r.diversity)
        hits = [Hit.from_stored(i + 1, chunks[cid]) for i, (cid, _) in enumerate(ranked[:k])]
        return hits, timings


def with_neighbours(store: VectorStore, hits: Sequence[Hit], n: int) -> list[Hit]:
    """``hits`` followed by the chunks up to ``n`` positions before and after each of them in the
    same document (not already there), each carrying the score of the hit it neighbours."""
    if n <= 0 or not hits:
        return list(hits)
    have = {h.chunk_id for h in hits}
    out = list(hits)
    for hit in hits:
        wanted = [i for i in range(hit.index - n, hit.index + n + 1) if i >= 0 and i != hit.index]
        for stored in sorted(store.chunks_at(hit.doc_id, wanted), key=lambda c: c.metadata.get("index", 0)):
            if stored.chunk_id not in have:
                have.add(stored.chunk_id)
                out.append(replace(Hit.from_stored(len(out) + 1, stored), score=hit.score))
    return out


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int) -> list[tuple[str, float]]:
    """(id, score) ordered by the sum of 1 / (k + rank) over the rankings the id appears in (rank
    from 1); ties keep the order of first appearance."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    order = {cid: i for i, cid in enumerate(dict.fromkeys(c for ranking in rankings for c in ranking))}
    return [(c, scores[c]) for c in sorted(scores, key=lambda c: (-scores[c], order[c]))]


def _zscores(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / sd if sd > 0 else 0.0 for v in values]


def weighted_fusion(dense: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], dense_weight: float,
                    doc_of: Mapping[str, str] | None = None, doc_scores: Mapping[str, float] | None = None,
                    document_weight: float = 0.0) -> list[tuple[str, float]]:
    """(id, score) of every candidate, best first. Each signal is z-normalised over the union of
    candidates (a candidate missing from one list gets that list's lowest score) and the score is
    ``dense_weight * dense + (1 - dense_weight) * keyword + document_weight * document``, where
    ``document`` is the BM25 score of the candidate's whole document. Ties keep first appearance
    (dense candidates first)."""
    ids = list(dict.fromkeys([c for c, _ in dense] + [c for c, _ in keyword]))
    if not ids:
        return []
    d, kw = dict(dense), dict(keyword)
    d_fill = min(d.values()) if d else 0.0
    k_fill = min(kw.values()) if kw else 0.0
    dz = _zscores([d.get(c, d_fill) for c in ids])
    kz = _zscores([kw.get(c, k_fill) for c in ids])
    scores = [dense_weight * a + (1.0 - dense_weight) * b for a, b in zip(dz, kz)]
    if document_weight and doc_of is not None and doc_scores:
        docz = _zscores([doc_scores.get(doc_of.get(c, ""), 0.0) for c in ids])
        scores = [s + document_weight * z for s, z in zip(scores, docz)]
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
    return [(ids[i], scores[i]) for i in order]


def maximal_marginal_relevance(ranked: Sequence[tuple[str, float]], vectors: Mapping[str, Sequence[float]],
                               k: int, relevance_weight: float) -> list[tuple[str, float]]:
    """Greedy MMR: pick, one at a time, the candidate with the best ``relevance_weight *
    relevance - (1 - relevance_weight) * (its highest cosine to an already picked one)``;
    relevance is the ranking's score scaled to [0, 1]. Candidates without a vector keep their
    relevance only. The first ``k`` picks, then the rest in their original order."""
    import numpy as np

    if not ranked:
        return []
    scores = np.array([s for _, s in ranked], dtype=np.float64)
    span = scores.max() - scores.min()
    rel = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    dim = len(next(iter(vectors.values()))) if vectors else 0
    has = np.array([cid in vectors for cid, _ in ranked])
    mat = np.array([vectors[cid] if cid in vectors else [0.0] * dim for cid, _ in ranked], dtype=np.float64)
    closest = np.zeros(len(ranked))
    left = np.ones(len(ranked), dtype=bool)
    picked: list[int] = []
    while left.any() and len(picked) < k:
        value = np.where(left, relevance_weight * rel - (1 - relevance_weight) * closest, -np.inf)
        best = int(np.argmax(value))  # the first of equal values: the better-ranked one
        picked.append(best)
        left[best] = False
        if has[best] and dim:
            closest = np.where(has, np.maximum(closest, mat @ mat[best]), closest)
    return [ranked[i] for i in picked] + [ranked[i] for i in range(len(ranked)) if left[i]]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b)))
