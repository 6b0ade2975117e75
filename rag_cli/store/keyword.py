"""The keyword index: BM25 (bm25s) over the same chunks as the vector store.

Beside the chunk-level index there is a document-level one (each document's chunks joined):
hybrid search adds a chunk's *document* score to its own, which tells apart chunks that read
alike but come from different documents (one company's filing from another's, one article from
another) and measured better on all three shared data sets (docs/retrieval-and-chunking.md, Retrieval).

It lives in ``.rag/keyword/`` and is rebuilt from the vector store's own chunks at the end of
every `rag index` run that changed something, tagged with the manifest's ``updated`` value.
A reader whose tag does not match (a run was interrupted, or is running now) builds it in
memory from the store instead, so keyword results never disagree with the vectors. With an
index on a Chroma server the tag is the server catalog's stamp, and a reader on any machine
saves what it builds (unless a run is writing): see ARCHITECTURE.md, "Sharing an index".
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

FILTER_KEYS = ("doc_id", "source", "kind", "page_start", "page_end")
ANALYZER = "bm25s-en-stopwords+snowball-english;documents"  # a saved index made another way is rebuilt


def _bm25s() -> Any:
    """bm25s, imported without scipy when nothing has imported scipy yet.

    bm25s imports ``scipy.sparse`` only to offer a second way of building an index; searching
    never uses it, and importing it costs ~0.08 s of every cold `rag ask`. Without it bm25s
    builds with its numpy backend (checked: the same results for 200 SQuAD questions). The
    block lasts for the import only; scipy stays importable for everything else."""
    import sys

    if "bm25s" not in sys.modules and "scipy.sparse" not in sys.modules:
        sys.modules["scipy.sparse"] = None  # type: ignore[assignment]  # makes `import scipy.sparse` fail
        try:
            import bm25s
        finally:
            del sys.modules["scipy.sparse"]
    import bm25s

    return bm25s


@lru_cache(maxsize=1)
def _stemmer() -> Callable[[list[str]], list[str]]:
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    return _bm25s().tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


@lru_cache(maxsize=1)
def _question_stopwords() -> frozenset[str]:
    """Words that tell how a question is asked, not what about ("how", "should", "my"): BM25
    keeps them (its list is short), and in a small folder they would count as rare."""
    _bm25s()
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(w for words in _tokens(list(STOPWORDS_EN_PLUS)) for w in words) | frozenset(STOPWORDS_EN_PLUS)


def keyword_text(text: str, meta: dict[str, Any]) -> str:
    """What BM25 sees of a chunk: its title and heading path, then its text."""
    return " ".join(p for p in (meta.get("title", ""), meta.get("heading", ""), text) if p)


def document_texts(texts: Sequence[str], metas: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Document ids and what BM25 sees of each document: its title once, then its chunks in
    order, each heading once."""
    parts: dict[str, list[tuple[int, str, str, str]]] = {}
    for text, meta in zip(texts, metas):
        parts.setdefault(meta.get("doc_id", ""), []).append(
            (int(meta.get("index", 0)), meta.get("title", ""), meta.get("heading", ""), text))
    doc_ids, doc_texts = [], []
    for doc_id, chunks in parts.items():
        chunks.sort(key=lambda c: c[0])
        words = [chunks[0][1]] if chunks[0][1] else []
        heading = ""
        for _, _, head, text in chunks:
            if head and head != heading:
                words.append(head)
                heading = head
            words.append(text)
        doc_ids.append(doc_id)
        doc_texts.append(" ".join(words))
    return doc_ids, doc_texts


class KeywordIndex:
    def __init__(self, ids: list[str], metas: list[dict[str, Any]], retriever: Any, tag: Any,
                 doc_ids: list[str] | None = None, doc_retriever: Any = None) -> None:
        self.ids = ids
        self.metas = metas
        self.retriever = retriever
        self.tag = tag
        self.doc_ids = doc_ids or []
        self.doc_retriever = doc_retriever
        self._doc_pos = {d: i for i, d in enumerate(self.doc_ids)}
        self._chunk_doc: dict[str, str] | None = None
        self._folded: frozenset[str] | None = None  # the vocabulary without accents, for unknown_names

    def unknown_names(self, query: str) -> list[str]:
        """The names of ``query`` that no chunk holds (store/names.py); [] for an empty index."""
        from rag_cli.store import names

        found = names.question_names(query)
        if not found or not self.ids or self.retriever is None:
            return []
        if self._folded is None:
            self._folded = frozenset(names.fold(w) for w in self.retriever.vocab_dict)
        return names.unknown(found, self._folded, lambda name: _tokens([name])[0])

    def doc_id_of(self, chunk_id: str) -> str:
        if self._chunk_doc is None:
            self._chunk_doc = {cid: m.get("doc_id", "") for cid, m in zip(self.ids, self.metas)}
        return self._chunk_doc.get(chunk_id, "")

    @classmethod
    def build(cls, ids: list[str], texts: list[str], metas: list[dict[str, Any]], tag: Any) -> KeywordIndex:
        bm25s = _bm25s()
        retriever, doc_retriever = bm25s.BM25(), bm25s.BM25()
        doc_ids: list[str] = []
        if ids:
            retriever.index(_tokens([keyword_text(t, m) for t, m in zip(texts, metas)]), show_progress=False)
            doc_ids, doc_texts = document_texts(texts, metas)
            doc_retriever.index(_tokens(doc_texts), show_progress=False)
        slim = [{k: v for k, v in m.items() if k in FILTER_KEYS or k.startswith("meta_")} for m in metas]
        return cls(ids, slim, retriever, tag, doc_ids, doc_retriever)

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write atomically: a new folder, then one rename over the old one."""
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")  # readers of a server index save too
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.ids:
            self.retriever.save(str(tmp / "bm25"), show_progress=False)
            self.doc_retriever.save(str(tmp / "bm25_documents"), show_progress=False)
        (tmp / "chunks.json").write_text(json.dumps({"analyzer": ANALYZER, "tag": self.tag, "ids": self.ids,
                                                     "metas": self.metas, "documents": self.doc_ids}))
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def saved_tag(folder: Path) -> Any:
        """The tag of the index saved in ``folder`` without loading its BM25 arrays (None: no
        usable index there), so that a run which changed nothing need not import bm25s."""
        try:
            data = json.loads((folder / "chunks.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("analyzer") != ANALYZER or "tag" not in data:
            return None
        parts = ["bm25", "bm25_documents"] if data.get("ids") else []
        return data["tag"] if all((folder / p).is_dir() for p in parts) else None

    @classmethod
    def load(cls, folder: Path) -> KeywordIndex | None:
        try:
            data = json.loads((folder / "chunks.json").read_text())
            if data.get("analyzer") != ANALYZER:
                return None
            retriever = doc_retriever = None
            if data["ids"]:
                bm25s = _bm25s()
                retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
                doc_retriever = bm25s.BM25.load(str(folder / "bm25_documents"), show_progress=False)
            return cls(data["ids"], data["metas"], retriever, data["tag"], data["documents"], doc_retriever)
        except (OSError, ValueError, KeyError):
            return None

    # -- search ---------------------------------------------------------------------------
    def search(self, query: str, k: int,
               allow: Callable[[dict[str, Any]], bool] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) of the best ``k`` chunks that ``allow`` accepts (filters
        apply inside the search: masked chunks score nothing)."""
        if not self.ids or self.retriever is None:
            return []
        tokens = _tokens([query])
        if not tokens or not tokens[0]:
            return []
        mask = None
        if allow is not None:
            import numpy as np

            mask = np.array([1.0 if allow(m) else 0.0 for m in self.metas], dtype=np.float32)
            if not mask.any():
                return []
        docs, scores = self.retriever.retrieve(tokens, k=min(k, len(self.ids)), show_progress=False,
                                               weight_mask=mask, n_threads=1)
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def document_scores(self, query: str, doc_ids: Sequence[str]) -> dict[str, float]:
        """The BM25 score of each of ``doc_ids`` for ``query`` at the document level (0 for a
        document the index does not know or no query word occurs in)."""
        if not self.doc_ids or self.doc_retriever is None:
            return {d: 0.0 for d in doc_ids}
        tokens = _tokens([query])
        ids = self.doc_retriever.get_tokens_ids(tokens[0]) if tokens and tokens[0] else []
        if not ids:
            return {d: 0.0 for d in doc_ids}
        scores = self.doc_retriever.get_scores(ids)
        return {d: float(scores[self._doc_pos[d]]) if d in self._doc_pos else 0.0 for d in doc_ids}

    def coverage(self, query: str, text: str) -> float | None:
        """The share of the query's words found in ``text``, each weighted by its rarity in the
        chunks (BM25's IDF, so a name counts far more than "often"; question words like "how" do
        not count); a word no chunk holds weighs most. None when the query has no word to weigh
        or the index is empty."""
        return self.coverer(query)(text)

    def coverer(self, query: str) -> Callable[[str], float | None]:
        """``coverage`` for one query over many texts: the query's words and weights are worked
        out once."""
        weights: dict[str, float] = {}
        if self.ids and self.retriever is not None:
            indptr = self.retriever.scores["indptr"]
            n = int(self.retriever.scores["num_docs"])
            for word in set(_tokens([query])[0]) - _question_stopwords():
                i = self.retriever.vocab_dict.get(word)
                df = int(indptr[i + 1] - indptr[i]) if i is not None and i + 1 < len(indptr) else 0
                weights[word] = math.log(1 + (n - df + 0.5) / (df + 0.5))
        total = sum(weights.values())
        if total <= 0:
            return lambda text: None

        def covers(text: str) -> float:
            found = set(_tokens([text])[0])
            return sum(weight for word, weight in weights.items() if word in found) / total

        return covers
