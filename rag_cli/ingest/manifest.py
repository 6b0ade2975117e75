"""The manifest: what the index holds, file by file, in SQLite beside the vector store.

It records each indexed file's size, mtime and content hash (so an unchanged file is
never read again), and every chunk id written for it. Chunk ids are registered *before*
they are written to the vector store, so the manifest always knows a superset of what
the store holds: an interrupted run leaves no chunk that the next run cannot find and
delete. A file whose write did not finish stays ``pending`` and is redone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rag_cli.errors import IndexCorrupt

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, added REAL NOT NULL);
-- files.rel is the file's document id (FileRecord.doc_id): the column kept its first name, from when the id
-- was always the path relative to the root, so the manifests written then read the same.
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, root TEXT NOT NULL, rel TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    documents INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0,
    warnings TEXT NOT NULL DEFAULT '[]', updated REAL NOT NULL,
    read_with TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, path TEXT NOT NULL, doc_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id);
"""

class FileState(StrEnum):
    """A file's state in the manifest (the ``files.status`` column)."""

    OK = "ok"  # indexed
    PENDING = "pending"  # being written: some of its chunks may be stored, its old ones not yet deleted
    FAILED = "failed"  # could not be read (``reason``)
    SKIPPED = "skipped"  # nothing to index (an empty file)


OK, PENDING, FAILED, SKIPPED = FileState.OK, FileState.PENDING, FileState.FAILED, FileState.SKIPPED


@dataclass(frozen=True)
class FileRecord:
    path: str
    root: str
    # The id of the file's document (and the prefix of its chunk ids), chosen when the file was first indexed
    # (ingest/walk.assign_doc_ids) and kept while the index holds the file. The path relative to the root, unless
    # another root of the index had that id first. A JSONL file's documents are its records, by their own ids.
    doc_id: str
    size: int
    mtime_ns: int
    sha256: str
    status: str
    reason: str
    documents: int
    chunks: int
    warnings: tuple[str, ...]
    # How the file was read, when a setting can change that without the file changing: a PDF's
    # "ocr=auto" (ingest/ocr.py read_key). Another value now: the file is read again.
    read_with: str = ""


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
            if "read_with" not in columns:  # a manifest of an earlier version: its PDFs are read again
                self._db.execute("ALTER TABLE files ADD COLUMN read_with TEXT NOT NULL DEFAULT ''")
            self._db.execute("SELECT COUNT(*) FROM files").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise IndexCorrupt(f"the index manifest {path} is damaged ({exc})",
                               hint="run `rag index --rebuild PATH` to build the index again (the damaged manifest "
                                    "is set aside)") from None

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- roots --------------------------------------------------------------------------
    def roots(self, *, in_order_added: bool = False) -> list[str]:
        """The roots indexed so far, sorted; or in the order they were first indexed (the order a bare
        `rag index` walks them in, so that a rebuild gives the files the document ids they had)."""
        order = "added, rowid" if in_order_added else "path"
        return [r[0] for r in self._db.execute(f"SELECT path FROM roots ORDER BY {order}")]

    def add_root(self, path: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO roots (path, added) VALUES (?, ?)", (path, time.time()))

    # -- files --------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self._db.execute("SELECT path, root, rel, size, mtime_ns, sha256, status, reason, documents, "
                                "chunks, warnings, read_with FROM files")
        records = {}
        for path, root, doc_id, size, mtime_ns, sha256, status, reason, documents, chunks, warnings, read_with in rows:
            records[path] = FileRecord(path, root, doc_id, size, mtime_ns, sha256, status, reason, documents, chunks,
                                       tuple(json.loads(warnings)), read_with)
        return records

    def put_file(self, rec: FileRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files (path, root, rel, size, mtime_ns, sha256, status, reason, documents, "
            "chunks, warnings, updated, read_with) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.path, rec.root, rec.doc_id, rec.size, rec.mtime_ns, rec.sha256, rec.status, rec.reason,
             rec.documents, rec.chunks, json.dumps(list(rec.warnings)), time.time(), rec.read_with))

    def remove_file(self, path: str) -> None:
        self._db.execute("DELETE FROM files WHERE path = ?", (path,))
        self._db.execute("DELETE FROM chunks WHERE path = ?", (path,))

    # -- chunks -------------------------------------------------------------------------
    def chunk_ids(self, path: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM chunks WHERE path = ?", (path,))}

    def register_chunks(self, path: str, ids: Iterable[tuple[str, str]]) -> None:
        """Record (chunk id, doc id) pairs as belonging to ``path``."""
        self._db.executemany("INSERT OR REPLACE INTO chunks (id, path, doc_id) VALUES (?, ?, ?)",
                             ((cid, path, doc) for cid, doc in ids))

    def forget_chunks(self, ids: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM chunks WHERE id = ?", ((i,) for i in ids))

    def owners(self, doc_ids: Sequence[str], path: str) -> dict[str, str]:
        """Other files that already hold any of ``doc_ids``: {doc id: path}."""
        found: dict[str, str] = {}
        for i in range(0, len(doc_ids), 500):
            part = list(doc_ids[i:i + 500])
            marks = ",".join("?" * len(part))
            for doc, owner in self._db.execute(
                    f"SELECT DISTINCT doc_id, path FROM chunks WHERE doc_id IN ({marks}) AND path != ?",
                    (*part, path)):
                found.setdefault(doc, owner)
        return found

    def document_table(self) -> list[tuple[str, str, int | None]]:
        """(doc id, source path, the file's mtime in ns) of every document in the index."""
        return list(self._db.execute("SELECT DISTINCT c.doc_id, c.path, f.mtime_ns FROM chunks c "
                                     "LEFT JOIN files f ON f.path = c.path ORDER BY c.doc_id"))

    def file_table(self) -> dict[str, tuple[int | None, list[str]]]:
        """{path: (mtime_ns, doc ids)} of every file with chunks (what a server index publishes)."""
        out: dict[str, tuple[int | None, list[str]]] = {}
        for path, mtime, doc in self._db.execute("SELECT DISTINCT c.path, f.mtime_ns, c.doc_id FROM chunks c "
                                                 "LEFT JOIN files f ON f.path = c.path ORDER BY c.path, c.doc_id"):
            out.setdefault(path, (mtime, []))[1].append(doc)
        return out

    def index_id(self) -> str:
        """This index folder's id, made on first use: a server collection records which folder writes it."""
        value = self.get_meta("index_id")
        if not isinstance(value, str):
            import uuid

            value = uuid.uuid4().hex
            self.set_meta("index_id", value)
        return value

    def chunk_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def clear(self) -> None:
        self._db.execute("DELETE FROM files")
        self._db.execute("DELETE FROM chunks")


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
