"""The vector store on Chroma: an embedded ``PersistentClient`` in the index folder.

Embeddings are always computed by the project and passed in; Chroma's own default
embedding function (which downloads a model) is never used. Chroma's exceptions are
translated into :class:`StoreError` here, at the boundary.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from rag_cli import crash
from rag_cli.errors import RagError, StoreError
from rag_cli.models import Chunk, StoredChunk
from rag_cli.store.catalog import Catalog
from rag_cli.store.chroma_api import forget_cached_system, open_existing

COLLECTION = "chunks"
_RESERVED = frozenset({"doc_id", "source", "kind", "index", "start", "end", "tokens", "hash", "heading",
                       "title", "page_start", "page_end", "ocr", "record"})


class VectorStore(Protocol):
    """Chunks with their vectors and metadata: what the Indexer writes, and what the Searcher,
    `rag serve` and `rag status` read. tests/test_store_contract.py runs every member against the
    embedded store and a Chroma server."""

    @property
    def where(self) -> str: ...  # how messages name the store ("in PATH", "on the Chroma server URL, collection 'c'")
    @property
    def catalog(self) -> Catalog | None: ...  # on a Chroma server, the index's record of itself; None when embedded

    # -- reading -----------------------------------------------------------------------------------
    def count(self) -> int: ...

    def query(self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None,
              with_vectors: bool = False) -> list[StoredChunk]:
        """The ``k`` chunks nearest ``embedding`` (cosine distance) that ``where`` lets through."""
        ...

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[StoredChunk, list[float]]]:
        """Chunks and their vectors by id (those that are there)."""
        ...

    def chunks_at(self, doc_id: str, indices: Sequence[int]) -> list[StoredChunk]:
        """The chunks of ``doc_id`` at these positions (those that exist)."""
        ...

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Every chunk's id, text and metadata (the keyword index is built from them)."""
        ...

    def consistent(self) -> AbstractContextManager[Any]:
        """Held across several reads that must see one moment of the store (no write lands between)."""
        ...

    # -- writing (the Indexer) ---------------------------------------------------------------------
    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(content hash, record hash) stored with each of ``ids`` that is in the store."""
        ...

    def relabel(self, chunks: Sequence[Chunk]) -> None:
        """Rewrite the text and metadata of stored chunks, keeping their vectors."""
        ...

    def upsert(self, chunks: Sequence[Chunk], embeddings: Sequence[Sequence[float]]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def reset(self) -> None:
        """Remove every chunk."""
        ...


def chunk_metadata(chunk: Chunk) -> dict[str, Any]:
    """What is stored beside a chunk's vector; document metadata keys get a ``meta_`` prefix."""
    meta: dict[str, Any] = {
        "doc_id": chunk.doc_id, "source": chunk.source, "kind": chunk.kind, "index": chunk.index,
        "start": chunk.start, "end": chunk.end, "tokens": chunk.tokens, "hash": chunk.content_hash,
        "heading": " > ".join(chunk.heading), "title": chunk.title,
    }
    if chunk.page_start is not None:
        meta["page_start"] = chunk.page_start
        meta["page_end"] = chunk.page_end
    if chunk.ocr:  # only when true: the metadata (and record hash) of other chunks stay as they were
        meta["ocr"] = True
    for key, value in chunk.metadata.items():
        if not isinstance(value, (str, int, float, bool)):
            value = json.dumps(value, ensure_ascii=False)
        meta[f"meta_{key}"] = value
    meta["record"] = record_hash(meta)
    return meta


def record_hash(meta: dict[str, Any]) -> str:
    """A hash of everything stored beside a chunk's vector: when only this changes (a JSONL
    record's fields, a chunk's offsets after an edit above it, a page number), the metadata is
    rewritten and the vector kept."""
    material = json.dumps({k: v for k, v in meta.items() if k != "record"}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class FolderGate:
    """One process at a time inside an embedded Chroma folder: an exclusive ``flock`` on a file
    beside it (``.rag/chroma.lock``), held for each call into Chroma.

    Chroma's embedded store is not safe across processes: a writer rewrites its HNSW files
    (``index_metadata.pickle`` and the rest) in place while it upserts, so a `rag ask` that opened
    the index at that moment read a half-written file ("Error deserializing pickle file"), and a
    reader that finds log records not yet applied applies them itself. Each call is short (one
    upsert batch at most), so a reader waits a moment for a writer, never a whole run; `rag index`'s
    own run lock (``.rag/lock``) is a different, longer lock. The kernel releases the lock of a
    killed process. Threads of one process take turns on a threading lock first: ``flock`` on one
    descriptor does not exclude them."""

    def __init__(self, path: Path, timeout: float = 300.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._thread_lock = threading.RLock()
        self._depth = 0

    def _descriptor(self) -> int | None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                try:  # a folder the user may read but not write: flock works on a read-only descriptor
                    self._fd = os.open(self.path, os.O_RDONLY)
                except OSError:
                    return None
        return self._fd

    def __enter__(self) -> FolderGate:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return self
        fd = self._descriptor()
        if fd is None:
            return self
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    self._depth -= 1
                    self._thread_lock.release()
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        raise StoreError(f"the Chroma folder {self.path.with_suffix('')} stayed busy for "
                                         f"{self.timeout:.0f} s (another process holds {self.path})",
                                         hint="a `rag index` or `rag serve` that is stuck may hold it: "
                                              "see `rag status`") from None
                    raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def __exit__(self, *_: Any) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def generation(self) -> int:
        """How many writes the folder has seen (the lock file's content); 0 without a lock file.
        Read inside the gate."""
        if self._fd is None:
            return 0
        try:
            return int.from_bytes(os.pread(self._fd, 8, 0), "little")
        except OSError:
            return 0

    def bump(self) -> int:
        """Count a write that is about to happen (before it: a writer killed in the middle still
        leaves a new number); the new generation. Inside the gate."""
        generation = self.generation() + 1
        if self._fd is not None:
            try:
                os.pwrite(self._fd, generation.to_bytes(8, "little"), 0)
            except OSError:  # a read-only descriptor: this process does not write the index anyway
                pass
        return generation

    def __del__(self) -> None:  # a store reopened by `rag serve` must not keep the old descriptor
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


class ChromaStore:
    """Chunks in one Chroma collection, cosine distance: embedded in the index folder
    (``ChromaStore(path)``) or on a Chroma server (``ChromaStore.on_server(settings.store)``)."""

    def __init__(self, path: Path, collection: str = COLLECTION) -> None:
        def client() -> Any:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            return chromadb.PersistentClient(
                path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))

        self.path: Path | None = path
        self.where = f"in {path}"
        self.catalog: Any = None  # a server index's record of itself (store/catalog.py)
        self._create = True
        self._gate: Any = FolderGate(path.with_name(path.name + ".lock"))
        self._reconnect: Callable[[], Any] | None = client  # a new client for the folder (None: on a server)
        self._attach(client, collection, hint="if the folder is damaged, run `rag index --rebuild`")

    @classmethod
    def on_server(cls, store: Any, *, create: bool = True) -> ChromaStore:
        """The collection ``store.collection`` on the Chroma server at ``store.url``, with its
        catalog. Readers pass ``create=False``: a collection that is not there is IndexNotFound
        (a mistyped name must not leave empty collections on a shared server)."""
        from rag_cli.store.server import describe_server, http_client

        self = cls.__new__(cls)
        self.path = None
        self._gate = nullcontext()  # the server orders its clients' requests itself
        self._reconnect = None
        self.where = f"on the Chroma server {describe_server(store)}"
        self._create = create
        self._attach(lambda: http_client(store), store.collection,
                     hint="check that the server runs and that store.url, store.tenant, store.database and "
                          f"${store.token_env} are right (see `rag config`)")
        self.catalog = Catalog(self._client, store.collection, self.where, self._call, create=create)
        return self

    def _attach(self, client: Any, collection: str, *, hint: str) -> None:
        self.collection_name = collection
        try:
            with self._gate:
                if self.path is None:
                    self._client = client()
                else:
                    self._fresh_client()
                self._collection = self._open()
                self._max_batch = max(1, min(5000, self._client.get_max_batch_size()))
        except RagError:  # a bad store.url (ConfigError) stays what it is
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the Chroma index {self.where}: {type(exc).__name__}: {exc}",
                             hint=hint) from None

    def _open(self) -> Any:
        if not self._create:
            return open_existing(self._client, self.collection_name, self.where)
        return self._client.get_or_create_collection(
            self.collection_name, metadata={"hnsw:space": "cosine"}, embedding_function=None)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._gate:
                if self.path is None:
                    return fn(*args, **kwargs)
                fn = self._current(fn)
                if what not in _WRITES:
                    return crash.in_stage(f"Chroma ({what} {self.where})", fn, *args, **kwargs)
                generation = self._gate.bump()
                result = crash.in_stage(f"Chroma ({what} {self.where})", fn, *args, **kwargs)
                # this process's own write: its client (Chroma's cached one for the folder) knows it
                _CLIENT_SEEN[str(self.path)] = self._generation = generation
                return result
        except RagError:
            raise
        except Exception as exc:
            raise StoreError(f"Chroma {what} failed {self.where}: {type(exc).__name__}: {exc}") from None

    def _fresh_client(self) -> None:
        """Chroma's client for the folder, reopened when the folder's write count moved since the
        one Chroma caches for this process was opened (by this store or another one). Chroma reads
        chroma.sqlite3 afresh on each call but keeps the HNSW index a process loaded first, so
        after another process wrote, a stale client finds chunks with text and no vector ("Error
        finding id") and misses new chunks in dense search. Inside the gate: no write can land
        meanwhile."""
        assert self.path is not None and self._reconnect is not None  # only a store in a folder reconnects
        generation = self._gate.generation()
        key = str(self.path)
        if _CLIENT_SEEN.get(key, generation) != generation:
            forget_client(self.path)
        self._client = self._reconnect()
        _CLIENT_SEEN[key] = self._generation = generation

    def _current(self, fn: Any) -> Any:
        """``fn`` on a client that has seen every write to the folder (``_fresh_client``)."""
        if self._gate.generation() == self._generation:
            return fn
        old_client, old_collection = self._client, self._collection
        self._fresh_client()
        self._collection = self._open()
        owner = getattr(fn, "__self__", None)
        if owner is old_collection:
            return getattr(self._collection, fn.__name__)
        if owner is old_client:
            return getattr(self._client, fn.__name__)
        return fn

    def consistent(self) -> Any:
        """Hold the store still across several calls that must see one moment of it (a search:
        the dense query, the keyword index built from the stored chunks, the vectors fetched for
        keyword-only hits): on an embedded folder, the FolderGate for the whole span."""
        return self._gate

    def count(self) -> int:
        return int(self._call("count", self._collection.count))

    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for batch in _batches(list(ids), 500):
            got = self._call("get", self._collection.get, ids=list(batch), include=["metadatas"])
            for cid, meta in zip(got["ids"], got["metadatas"] or []):
                found[cid] = ((meta or {}).get("hash", ""), (meta or {}).get("record", ""))
        return found

    def relabel(self, chunks: Sequence[Chunk]) -> None:
        vectors = self.fetch([c.chunk_id for c in chunks])
        kept = [c for c in chunks if c.chunk_id in vectors]
        self.upsert(kept, [vectors[c.chunk_id][1] for c in kept])

    def upsert(self, chunks: Sequence[Chunk], embeddings: Sequence[Sequence[float]]) -> None:
        self.upsert_raw([c.chunk_id for c in chunks], embeddings, [c.text for c in chunks],
                        [chunk_metadata(c) for c in chunks])

    def upsert_raw(self, ids: Sequence[str], embeddings: Sequence[Sequence[float]], texts: Sequence[str],
                   metadatas: Sequence[dict[str, Any]]) -> None:
        """Write records as they are stored (what ``page`` reads back)."""
        step = self._max_batch
        for start in range(0, len(ids), step):
            self._call("upsert", self._collection.upsert, ids=list(ids[start:start + step]),
                       embeddings=[list(v) for v in embeddings[start:start + step]],
                       documents=list(texts[start:start + step]), metadatas=list(metadatas[start:start + step]))

    def page(self, offset: int, limit: int, *, vectors: bool = True
             ) -> tuple[list[str], list[str], list[dict[str, Any]], list[Sequence[float]]]:
        """One page of every record: ids, texts, metadata and (with ``vectors``) embeddings."""
        include = ["documents", "metadatas"] + (["embeddings"] if vectors else [])
        got = self._call("get", self._collection.get, include=include, limit=limit, offset=offset)
        embeddings = got["embeddings"] if vectors else None
        return (list(got["ids"]), [d or "" for d in got["documents"]], [m or {} for m in got["metadatas"]],
                [] if embeddings is None else [list(v) for v in embeddings])

    def delete(self, ids: Sequence[str]) -> None:
        for batch in _batches(list(ids), self._max_batch):
            self._call("delete", self._collection.delete, ids=list(batch))

    def reset(self) -> None:
        self._call("delete_collection", self._client.delete_collection, self.collection_name)
        self._collection = self._call("create_collection", self._open)
        if self.catalog is not None:
            self.catalog.reset()

    def query(self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None,
              with_vectors: bool = False) -> list[StoredChunk]:
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if with_vectors else [])
        res = self._call("query", self._collection.query, query_embeddings=[list(embedding)], n_results=k,
                         where=where or None, include=include)
        vectors = res["embeddings"][0] if with_vectors else [None] * len(res["ids"][0])
        return [StoredChunk(cid, doc or "", meta or {}, dist, None if vec is None else [float(x) for x in vec])
                for cid, doc, meta, dist, vec in zip(res["ids"][0], res["documents"][0], res["metadatas"][0],
                                                     res["distances"][0], vectors)]

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Every chunk's id, text and metadata (for building the keyword index)."""
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        total, size = self.count(), 5000
        for offset in range(0, total, size):
            i, t, m, _ = self.page(offset, size, vectors=False)
            ids += i
            texts += t
            metas += m
        return ids, texts, metas

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[StoredChunk, list[float]]]:
        """Chunks and their vectors by id."""
        out: dict[str, tuple[StoredChunk, list[float]]] = {}
        for batch in _batches(list(ids), 500):
            got = self._call("get", self._collection.get, ids=list(batch),
                             include=["documents", "metadatas", "embeddings"])
            for cid, doc, meta, vec in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"]):
                out[cid] = (StoredChunk(cid, doc or "", meta or {}), [float(x) for x in vec])
        return out

    def chunks_at(self, doc_id: str, indices: Sequence[int]) -> list[StoredChunk]:
        """The chunks of ``doc_id`` at these positions (those that exist)."""
        if not indices:
            return []
        got = self._call("get", self._collection.get, include=["documents", "metadatas"],
                         where={"$and": [{"doc_id": doc_id}, {"index": {"$in": sorted(set(indices))}}]})
        return [StoredChunk(cid, doc or "", meta or {}) for cid, doc, meta in
                zip(got["ids"], got["documents"], got["metadatas"])]

    def all_ids(self) -> list[str]:
        return list(self._call("get", self._collection.get, include=[])["ids"])


_WRITES = frozenset({"upsert", "delete", "delete_collection", "create_collection"})
# Per embedded folder, the write count that Chroma's cached client in this process has seen.
_CLIENT_SEEN: dict[str, int] = {}


def forget_client(path: Path) -> None:
    """Drop Chroma's process-wide client for an embedded folder, so that the next one opened
    reads what other processes wrote (Chroma caches one per folder for the life of the process)."""
    import sys

    if "chromadb" not in sys.modules:
        return
    forget_cached_system(path)
    _CLIENT_SEEN.pop(str(path), None)


def open_store(settings: Any, chroma_folder: Path) -> ChromaStore:
    """The index's vector store: on the Chroma server of ``store.url``, else embedded in ``chroma_folder``."""
    if settings.store.url:
        return ChromaStore.on_server(settings.store)
    return ChromaStore(chroma_folder)


class LazyChromaStore:
    """The vector store, opened on first use: a re-run with nothing to write (the common case)
    never imports chromadb, which is most of its start-up. A VectorStore: each member opens it."""

    def __init__(self, opener: Callable[[], ChromaStore], *, on_server: bool = False) -> None:
        self._open_store = opener
        self._store: ChromaStore | None = None
        self.on_server = on_server  # known before opening: the writer claims a server collection first

    @classmethod
    def for_settings(cls, settings: Any, opener: Callable[[], ChromaStore]) -> LazyChromaStore:
        """The index's store (``opener``: ``open_store`` for these settings, timed by the caller),
        on the Chroma server of ``store.url`` or embedded."""
        return cls(opener, on_server=bool(settings.store.url))

    @property
    def opened(self) -> bool:
        return self._store is not None

    def _opened(self) -> ChromaStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    @property
    def where(self) -> str:
        return self._opened().where

    @property
    def catalog(self) -> Catalog | None:
        return self._opened().catalog

    def count(self) -> int:
        return self._opened().count()

    def query(self, embedding: Sequence[float], k: int, where: dict[str, Any] | None = None,
              with_vectors: bool = False) -> list[StoredChunk]:
        return self._opened().query(embedding, k, where, with_vectors)

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[StoredChunk, list[float]]]:
        return self._opened().fetch(ids)

    def chunks_at(self, doc_id: str, indices: Sequence[int]) -> list[StoredChunk]:
        return self._opened().chunks_at(doc_id, indices)

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        return self._opened().all_chunks()

    def consistent(self) -> AbstractContextManager[Any]:
        return self._opened().consistent()

    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        return self._opened().stored_records(ids)

    def relabel(self, chunks: Sequence[Chunk]) -> None:
        self._opened().relabel(chunks)

    def upsert(self, chunks: Sequence[Chunk], embeddings: Sequence[Sequence[float]]) -> None:
        self._opened().upsert(chunks, embeddings)

    def delete(self, ids: Sequence[str]) -> None:
        self._opened().delete(ids)

    def reset(self) -> None:
        self._opened().reset()
