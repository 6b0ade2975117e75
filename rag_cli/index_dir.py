"""The index folder: its layout, its write lock and the record of how it was built.

```
.rag/
  chroma/              Chroma's PersistentClient data (vectors, chunk text, metadata); with
                       store.url they are on a Chroma server instead (store/catalog.py)
  manifest.sqlite3     files, chunk ids, roots and the build record (see ingest/manifest.py)
  keyword/             the BM25 index over the same chunks (store/keyword.py)
  answers.sqlite3      the answer cache of `rag ask`
  vectors.sqlite3      the vector cache of questions and narrowed sentences (store/vector_cache.py)
  catalog-files.json   with store.url: this machine's copy of the server index's file table
  chat_history         `rag chat`'s line-editing history (readline; the last 1,000 lines, 0600)
  queries.jsonl, queries.jsonl.1, queries.lock   the query log (ask.log; rag_cli/querylog.py)
  lock                 held by the `rag index` run that is writing
  chroma.lock          held for each call into chroma/, by any process (store/chroma.py FolderGate)
  serve.json, serve.sock, serve.lock, serve.log   `rag serve`'s state, socket, lock and (--detach) log
                       (serve/protocol.py)
```
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_cli.config import Settings
from rag_cli.errors import IndexBusy, IndexCorrupt, IndexMismatch, IndexNotFound
from rag_cli.ingest.manifest import Manifest

SCHEMA_VERSION = 1
DIRTY = "dirty:"  # the "updated" stamp from a run's first write to its end: "dirty:<unix time>"


def dirty_stamp() -> str:
    """The stamp a run writes before its first write (to the manifest, and a server's catalog)."""
    return f"{DIRTY}{time.time()}"


def is_dirty(stamp: Any) -> bool:
    """Whether an "updated" stamp says a run is writing, or was interrupted: the keyword index
    and cached answers may not match the store."""
    return isinstance(stamp, str) and stamp.startswith(DIRTY)


def build_record(settings: Settings, model_name: str, dimension: int, size: int,
                 prefixes: tuple[str, str] = ("", "")) -> dict[str, Any]:
    """What an index must agree with to be searched or extended: anything that changes vectors
    or chunk boundaries. ``size`` is the effective chunk size (after the model's cap);
    ``prefixes`` the (query, document) prefixes in effect."""
    c = settings.chunking
    return {
        "schema_version": SCHEMA_VERSION,
        "embedding.backend": settings.embedding.backend,
        "embedding.model": model_name,
        "embedding.dimension": dimension,
        "embedding.document_prefix": prefixes[1],
        "embedding.query_prefix": prefixes[0],
        "chunking.strategy": c.strategy,
        "chunking.size": size,
        "chunking.overlap": c.overlap,
        "chunking.min_size": c.min_size,
        "chunking.context_header": c.context_header,
    }


def check_build(recorded: dict[str, Any] | None, current: dict[str, Any], index_dir: Path | str) -> None:
    """Refuse to mix vectors or chunkings: raise IndexMismatch naming every difference between
    the recorded build and ``current`` (all of a build record, or only the keys a reader needs).
    ``index_dir``: the index folder, or how messages name a server index ("on the Chroma server …")."""
    if not recorded:
        return
    where = f"in {index_dir}" if isinstance(index_dir, Path) else index_dir
    if "schema_version" in current and recorded.get("schema_version") != current["schema_version"]:
        raise IndexMismatch(
            f"the index {where} has schema version {recorded.get('schema_version')}; this rag-cli "
            f"writes version {current['schema_version']}", hint="run `rag index --rebuild` to rebuild it")
    diffs = [f"{k}: index has {recorded.get(k)!r}, settings say {v!r}"
             for k, v in current.items() if recorded.get(k) != v]
    if diffs:
        raise IndexMismatch(
            f"the index {where} was built with other settings ({'; '.join(diffs)})",
            hint="run `rag index --rebuild` to rebuild it with the current settings, "
                 "or set the values the index was built with")


@dataclass
class IndexPaths:
    root: Path

    @property
    def chroma(self) -> Path:
        return self.root / "chroma"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.sqlite3"

    @property
    def keyword(self) -> Path:
        return self.root / "keyword"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def chat_history(self) -> Path:
        return self.root / "chat_history"

    def exists(self) -> bool:
        return self.manifest.is_file()

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.chmod(self.root, 0o700)  # chunk text is the user's documents: keep it theirs
        except OSError:
            pass

    def open_manifest(self, *, create: bool = False, set_damaged_aside: bool = False) -> Manifest:
        """The manifest (IndexNotFound without one; IndexCorrupt when it is damaged, unless
        ``set_damaged_aside``: then the damaged file is renamed ``*.damaged`` and a new one made)."""
        if not self.exists() and not create:
            raise IndexNotFound(f"no index in {self.root}", hint="run `rag index PATH` to build one")
        if create:
            self.create()
        try:
            return Manifest(self.manifest)
        except IndexCorrupt:
            if not set_damaged_aside:
                raise
            for suffix in ("", "-wal", "-shm"):
                damaged = self.manifest.with_name(self.manifest.name + suffix)
                if damaged.exists():
                    os.replace(damaged, damaged.with_name(damaged.name + ".damaged"))
            return Manifest(self.manifest)

    def check_vectors(self, manifest: Manifest) -> None:
        """IndexCorrupt when the manifest lists chunks but the embedded vector store is gone."""
        if not (self.chroma / "chroma.sqlite3").exists() and manifest.chunk_count() > 0:
            raise IndexCorrupt(f"the vector store {self.chroma} is missing, though the index lists "
                               f"{manifest.chunk_count()} chunks",
                               hint="run `rag index --rebuild` to embed the documents again")


class IndexLock:
    """An exclusive ``flock`` on ``.rag/lock`` for the duration of one `rag index` run.

    The kernel releases it when the process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, path: Path, timeout: float = 0.0, on_wait: Any = None) -> None:
        self.path = path
        self.timeout = timeout
        self.on_wait = on_wait
        self._fd: int | None = None

    def __enter__(self) -> IndexLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IndexBusy(f"another `rag index` (pid {holder}) is writing to {self.path.parent}",
                                    hint="wait for it to finish, or pass --wait SECONDS") from None
                if not warned and self.on_wait:
                    self.on_wait(f"waiting for another `rag index` (pid {holder}) to finish")
                    warned = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *_: Any) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
