"""What an index says about itself, wherever it lives: the one seam its readers open.

An index in a folder keeps its record in the manifest; an index on a Chroma server
(``store.url``) keeps it in the collection's catalog (store/catalog.py), and its folder holds only
this machine's caches. Both answer the same questions: where it is, how it was built (the build
record), its "updated" stamp, its documents and their files, how many chunks and files, who writes
it; and both give the vector store that holds the chunks. ``open_index`` is the one place that
tells the two apart for readers (the Searcher, `rag status`, `rag doctor`, `rag serve`);
``StampReader`` is the cheap check `rag serve` makes before every request.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag_cli.errors import IndexCorrupt, IndexNotFound, StoreError
from rag_cli.index_dir import IndexPaths, is_dirty
from rag_cli.ingest.manifest import FileState
from rag_cli.models import DocumentInfo

if TYPE_CHECKING:
    from rag_cli.config import Settings
    from rag_cli.store.chroma import ChromaStore, VectorStore

SERVER_PROBE_TIMEOUT = 10.0  # seconds: status and doctor never wait store.timeout (60 s) for a server
# Counts of the manifest's file states; an index on a server knows only the total.
FILE_STATUSES = tuple(str(s) for s in FileState)


class IndexRecord(Protocol):
    """An opened index's record of itself (a snapshot taken when it was opened)."""

    @property
    def paths(self) -> IndexPaths: ...  # the index folder (for a server index: this machine's caches)
    @property
    def where(self) -> str: ...  # for messages: "/notes/.rag", "on the Chroma server http://…, collection 'x'"
    @property
    def server(self) -> str: ...  # the server it is on, as `where` says it ("" for an index in a folder)
    @property
    def build(self) -> dict[str, Any]: ...  # the build record ({} before a first run finished)
    @property
    def updated(self) -> Any: ...  # the stamp: a unix time, "dirty:<time>" while a run writes, or None
    @property
    def writer(self) -> dict[str, Any] | None: ...  # who writes a server index ({"id", "host", "path"})
    @property
    def saves_keyword_index(self) -> bool: ...  # a reader saves the keyword index it rebuilt

    def documents(self) -> list[DocumentInfo]: ...
    def chunk_count(self) -> int: ...
    def file_counts(self) -> dict[str, int | None]: ...  # {"total", "ok", "pending", "failed", "skipped"}
    def roots(self) -> tuple[str, ...]: ...
    def written_here(self) -> bool: ...  # this folder's runs write the index
    def incomplete(self) -> str: ...  # why there is no build record, for a message ("" with one)
    def store(self) -> VectorStore: ...


@dataclass
class ManifestRecord:
    """An index in a folder: its manifest (read once, when opened) and the embedded Chroma."""

    paths: IndexPaths
    build: dict[str, Any] = field(default_factory=dict)
    updated: Any = None
    writer: dict[str, Any] | None = None
    _documents: list[DocumentInfo] = field(default_factory=list)
    # The indexer writes the keyword index, under the index lock; a reader only builds a stale one.
    saves_keyword_index = False

    server = ""

    @property
    def where(self) -> str:
        return str(self.paths.root)

    @classmethod
    def open(cls, paths: IndexPaths, *, check_vectors: bool = True) -> ManifestRecord:
        """IndexNotFound without a manifest; IndexCorrupt when it cannot be read, or (with
        ``check_vectors``) when it lists chunks whose vector store is gone."""
        with cls._manifest(paths) as manifest:
            if check_vectors:
                paths.check_vectors(manifest)
            return cls(paths, build=manifest.get_meta("build") or {}, updated=manifest.get_meta("updated"),
                       _documents=[DocumentInfo(d, p, t) for d, p, t in manifest.document_table()])

    @staticmethod
    @contextlib.contextmanager
    def _manifest(paths: IndexPaths) -> Iterator[Any]:
        try:
            manifest = paths.open_manifest()  # IndexNotFound when there is none
            try:
                yield manifest
            finally:
                manifest.close()
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt(f"the manifest {paths.manifest} is damaged ({type(exc).__name__}: {exc})",
                               hint=f"delete {paths.root} and run `rag index PATH` to build the index again") from None

    def documents(self) -> list[DocumentInfo]:
        return self._documents

    # What only `rag status` and `rag doctor` ask: read when asked, not by every Searcher.
    def chunk_count(self) -> int:
        with self._manifest(self.paths) as manifest:
            return int(manifest.chunk_count())

    def file_counts(self) -> dict[str, int | None]:
        with self._manifest(self.paths) as manifest:
            statuses = [str(r.status) for r in manifest.files().values()]
        return {"total": len(statuses), **{s: statuses.count(s) for s in FILE_STATUSES}}

    def roots(self) -> tuple[str, ...]:
        with self._manifest(self.paths) as manifest:
            return tuple(manifest.roots())

    def written_here(self) -> bool:
        return True

    def incomplete(self) -> str:
        return "" if self.build else (f"the index in {self.paths.root} has no build record: its first run, or a "
                                      "--rebuild, did not finish")

    def store(self) -> VectorStore:
        from rag_cli.store.chroma import ChromaStore

        return ChromaStore(self.paths.chroma)


@dataclass
class CatalogRecord:
    """An index on a Chroma server: the catalog's state record and file table, the collection."""

    paths: IndexPaths
    opened: ChromaStore  # the collection, its catalog open
    state: dict[str, Any]
    # No run on this machine writes its keyword index: a reader that builds one keeps it.
    saves_keyword_index = True

    @property
    def where(self) -> str:
        return str(self.opened.where)

    @property
    def server(self) -> str:
        return self.where

    @property
    def build(self) -> dict[str, Any]:
        return self.state.get("build") or {}

    @property
    def updated(self) -> Any:
        return self.state.get("updated")

    @property
    def writer(self) -> dict[str, Any] | None:
        return self.state.get("writer") or {}

    def _files(self) -> dict[str, tuple[int | None, list[str]]]:
        from rag_cli.store.catalog import CATALOG_CACHE

        return self.opened.catalog.files_cached(self.paths.root / CATALOG_CACHE, self.state.get("files"))

    def documents(self) -> list[DocumentInfo]:
        from rag_cli.store.catalog import document_table

        return [DocumentInfo(d, p, t) for d, p, t in document_table(self._files())]

    def chunk_count(self) -> int:
        return int(self.opened.count())

    def file_counts(self) -> dict[str, int | None]:
        return {"total": len(self._files()), **{s: None for s in FILE_STATUSES}}

    def roots(self) -> tuple[str, ...]:
        return ()  # the writer's folder knows them; `rag status` there shows them

    def written_here(self) -> bool:
        if not self.paths.exists():
            return False
        manifest = self.paths.open_manifest()
        try:
            return (self.writer or {}).get("id") == manifest.get_meta("index_id")
        finally:
            manifest.close()

    def incomplete(self) -> str:
        if self.build:
            return ""
        w = self.writer or {}
        return (f"the index {self.where} is not complete yet (a `rag index` or `rag index --to` from "
                f"{w.get('host', '?')}:{w.get('path', '?')} is writing it, or was interrupted)")

    def store(self) -> VectorStore:
        return self.opened


def open_index(settings: Settings, *, complete: bool = True, probe: bool = False) -> IndexRecord:
    """The index of ``settings``, opened for reading: IndexNotFound when there is none.

    ``complete``: an index whose first run has not finished (no build record while a run writes
    it) is IndexNotFound too, as a Searcher needs; `rag status` and `rag doctor` pass False to
    describe it. ``probe``: a server is asked with short timeouts (status and doctor must not
    wait for one that does not answer)."""
    paths = IndexPaths(settings.index_dir)
    if not settings.store.url:
        return ManifestRecord.open(paths, check_vectors=complete)
    from rag_cli.store.chroma import ChromaStore

    store = replace(settings.store, timeout=min(settings.store.timeout, SERVER_PROBE_TIMEOUT)) if probe \
        else settings.store
    opened = ChromaStore.on_server(store, create=False)  # IndexNotFound: no collection
    state = opened.catalog.state()
    if not state.get("build"):
        if not is_dirty(state.get("updated")):
            raise IndexNotFound(f"no index {opened.where}",
                                hint="run `rag index PATH` with this store.url, or `rag index --to URL` in a folder "
                                     "with a local index to copy it there")
        if complete:
            raise IndexNotFound(f"the index {opened.where} is not complete yet (a `rag index` or `rag index "
                                "--to` run is writing it, or was interrupted)",
                                hint="wait for it, or run it again from the folder that writes the collection")
    paths.create()  # this machine's caches (keyword index, answers, vectors) live in the folder
    return CatalogRecord(paths, opened, state)


def prepare_folder(settings: Settings) -> IndexPaths:
    """The index folder a long-lived reader (`rag serve`) keeps its files in: IndexNotFound for an
    index in a folder that has none; made for an index on a server (it holds only caches)."""
    paths = IndexPaths(settings.index_dir)
    if settings.store.url:
        paths.create()
    elif not paths.exists():
        raise IndexNotFound(f"no index in {paths.root}", hint="run `rag index PATH` to build one")
    return paths


class StampReader:
    """What changes whenever a `rag index` run changes the index (its "updated" stamp) or a file's
    recorded stat (filters on modification time use it), read cheaply before each request of a
    warm server. In a folder: two queries on the manifest, without opening it as a writer would.
    On a server: the catalog's state record (one request; the catalog is opened once, and again
    if its collection was dropped or recreated)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index_dir = Path(settings.index_dir)
        self._catalog: Any = None

    def read(self) -> tuple[Any, ...]:
        """The stamp; IndexNotFound when there is no index."""
        if not self.settings.store.url:
            return manifest_stamp(self.index_dir)
        if self._catalog is not None:
            try:
                state = self._catalog.state()
                return (state.get("updated"), state.get("files"))
            except StoreError:  # dropped or recreated on the server: open it again, below
                self._catalog = None
        from rag_cli.store.chroma import ChromaStore

        self._catalog = ChromaStore.on_server(self.settings.store, create=False).catalog
        state = self._catalog.state()
        return (state.get("updated"), state.get("files"))


def manifest_stamp(index_dir: Path) -> tuple[Any, ...]:
    """(updated, number of files, latest file change) of the manifest in ``index_dir``."""
    path = IndexPaths(index_dir).manifest
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10)
    except sqlite3.OperationalError:
        raise IndexNotFound(f"no index in {index_dir}", hint="run `rag index PATH` to build one") from None
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
        files = db.execute("SELECT COUNT(*), MAX(updated) FROM files").fetchone()
        return (row[0] if row else None, *files)
    except sqlite3.Error as exc:
        raise IndexNotFound(f"cannot read the index manifest in {index_dir}: {exc}") from None
    finally:
        db.close()
