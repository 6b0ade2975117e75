"""The keyword index: BM25 (bm25s) over the same chunks as the vector store.

It lives in ``.rag/keyword/`` and is rebuilt from the vector store's own chunks at the end of
every `rag index` run that changed something, tagged with the manifest's ``updated`` value.
A reader whose tag does not match (a run was interrupted, or is running now) builds it in
memory from the store instead, so keyword results never disagree with the vectors.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

FILTER_KEYS = ("doc_id", "source", "kind", "page_start", "page_end")
ANALYZER = "bm25s-en-stopwords+snowball-english"  # a saved index made another way is rebuilt


@lru_cache(maxsize=1)
def _stemmer() -> Callable[[list[str]], list[str]]:
    import Stemmer

    return Stemmer.Stemmer("english").stemWords


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(text: str, meta: dict[str, Any]) -> str:
    """What BM25 sees of a chunk: its title and heading path, then its text."""
    return " ".join(p for p in (meta.get("title", ""), meta.get("heading", ""), text) if p)


class KeywordIndex:
    def __init__(self, ids: list[str], metas: list[dict[str, Any]], retriever: Any, tag: Any) -> None:
        self.ids = ids
        self.metas = metas
        self.retriever = retriever
        self.tag = tag

    @classmethod
    def build(cls, ids: list[str], texts: list[str], metas: list[dict[str, Any]], tag: Any) -> "KeywordIndex":
        import bm25s

        retriever = bm25s.BM25()
        if ids:
            retriever.index(_tokens([keyword_text(t, m) for t, m in zip(texts, metas)]), show_progress=False)
        slim = [{k: v for k, v in m.items() if k in FILTER_KEYS or k.startswith("meta_")} for m in metas]
        return cls(ids, slim, retriever, tag)

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write atomically: a new folder, then one rename over the old one."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.ids:
            self.retriever.save(str(tmp / "bm25"), show_progress=False)
        (tmp / "chunks.json").write_text(json.dumps({"analyzer": ANALYZER, "tag": self.tag, "ids": self.ids,
                                                     "metas": self.metas}))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> "KeywordIndex | None":
        try:
            data = json.loads((folder / "chunks.json").read_text())
            if data.get("analyzer") != ANALYZER:
                return None
            retriever = None
            if data["ids"]:
                import bm25s

                retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
            return cls(data["ids"], data["metas"], retriever, data["tag"])
        except (OSError, ValueError, KeyError):
            return None

    # -- search ---------------------------------------------------------------------------
    def search(self, query: str, k: int, allow: Callable[[dict[str, Any]], bool] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) of the best ``k`` chunks that ``allow`` accepts (filters
        apply inside the search: masked chunks score nothing)."""
        if not self.ids or self.retriever is None:
            return []
        tokens = _tokens([query])
        if not tokens or not tokens[0]:
            return []
        mask = None
        if allow is not None:
            mask = np.array([1.0 if allow(m) else 0.0 for m in self.metas], dtype=np.float32)
            if not mask.any():
                return []
        docs, scores = self.retriever.retrieve(tokens, k=min(k, len(self.ids)), show_progress=False,
                                               weight_mask=mask, n_threads=1)
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
