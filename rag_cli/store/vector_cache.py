"""Vectors already computed, kept in the index folder: questions asked before, and the sentences
`rag ask` narrowed before (re-embedding the sentences of the retrieved chunks is most of what
`ask` spends outside the model: ~1,000 tokens per question, 0.1-0.5 s here).

Entries are keyed by the embedder's name and the text, so they never go stale: a changed chunk
has other sentences, and another model has another name (and needs another index anyway).
The table is bounded (``MAX_ROWS``); the oldest entries go first. A cache that cannot be
opened or written (a read-only index folder) is simply not used.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VECTOR_CACHE = "vectors.sqlite3"
MAX_ROWS = 200_000  # ~300 MB at 384 dimensions at most; pruned to 90% when exceeded


class VectorCache:
    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                db = sqlite3.connect(str(self.path), timeout=5, isolation_level=None, check_same_thread=False)
                db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
                self._db = db
            except sqlite3.Error as exc:
                log.info("vector cache %s not used: %s", self.path, exc)
                self._broken = True
        return self._db

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha256(f"{self.namespace}\0{kind}\0{text}".encode()).hexdigest()

    def get_many(self, kind: str, texts: Sequence[str]) -> dict[str, list[float]]:
        db = self._connect()
        if db is None or not texts:
            return {}
        keys = {self._key(kind, t): t for t in texts}
        found: dict[str, list[float]] = {}
        try:
            marks = ",".join("?" * len(keys))
            for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", list(keys)):
                found[keys[key]] = array("d", blob).tolist()
        except sqlite3.Error as exc:
            log.info("vector cache read failed: %s", exc)
        return found

    def put_many(self, kind: str, items: dict[str, Sequence[float]]) -> None:
        db = self._connect()
        if db is None or not items:
            return
        try:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                           [(self._key(kind, t), array("d", v).tobytes()) for t, v in items.items()])
            (count,) = db.execute("SELECT COUNT(*) FROM vectors").fetchone()
            if count > MAX_ROWS:  # the oldest rows (lowest rowids) go
                db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)",
                           (count - int(MAX_ROWS * 0.9),))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.info("vector cache write failed: %s", exc)
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class CachingEmbedder:
    """An Embedder that answers from a VectorCache first and embeds only what is missing (in
    one batch). It loads nothing until a text is missing, so a repeated question never loads
    the embedding model at all."""

    def __init__(self, inner: Any, cache: VectorCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    def warm_up(self) -> None:
        self.inner.warm_up()

    def embed_query(self, text: str) -> list[float]:
        found = self.cache.get_many("query", [text])
        if text in found:
            return found[text]
        vector = self.inner.embed_query(text)
        self.cache.put_many("query", {text: vector})
        return vector

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        distinct = list(dict.fromkeys(texts))
        found = self.cache.get_many("text", distinct)
        missing = [t for t in distinct if t not in found]
        if missing:
            fresh = dict(zip(missing, self.inner.embed_documents(missing)))
            self.cache.put_many("text", fresh)
            found.update(fresh)
        return [found[t] for t in texts]

    def __getattr__(self, name: str) -> Any:  # anything else an embedder offers (files, runtime, ...)
        return getattr(self.inner, name)
