"""The catalog of an index on a Chroma server: what an embedded index keeps in its manifest
and a reader needs, published beside the chunks so that any machine can search them.

It is a second collection, ``COLLECTION.catalog``, of small records (Chroma stores nothing
but collections; each record carries a one-number placeholder vector):

```
@state           how the index was built (the build record), its "updated" stamp, the
                 index folder that writes it, and a digest of the file table
file:PATH        one per indexed file: [its mtime, the ids of its documents] as JSON
                 (filters on path and modification time use them)
```

The writer (the one index folder whose manifest describes the collection) marks the stamp
``dirty:…`` before its first write and publishes the new stamp, after the file table, at the
end of a run. Readers key their local keyword index and answer cache on the stamp; see
ARCHITECTURE.md, "Sharing an index".
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag_cli.errors import IndexMismatch
from rag_cli.fileio import write_json_atomically
from rag_cli.store.chroma_api import open_existing

CATALOG_CACHE = "catalog-files.json"  # a reader's copy of the file table, in its index folder
STATE = "@state"
FILE = "file:"
PAGE = 1000
_PLACEHOLDER = [0.0]  # Chroma needs a vector on every record; the catalog is never searched by vector


def writer_record(manifest: Any, index_root: Any) -> dict[str, str]:
    """Who writes a server collection: the index folder's id (its manifest's), host and path."""
    with manifest.transaction():
        index_id = manifest.index_id()
    return {"id": index_id, "host": socket.gethostname(), "path": str(index_root)}


def catalog_name(collection: str) -> str:
    return f"{collection}.catalog"


def table_digest(files: dict[str, tuple[int | None, list[str]]]) -> str:
    """A digest of the file table (changes with any file's mtime or documents)."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]


def document_table(files: dict[str, tuple[int | None, list[str]]]) -> list[tuple[str, str, int | None]]:
    """(doc id, path, mtime) rows ordered like ``Manifest.document_table``."""
    return sorted(((doc, path, mtime) for path, (mtime, docs) in files.items() for doc in set(docs)),
                  key=lambda row: (row[0], row[1]))


class Catalog:
    def __init__(self, client: Any, collection: str, where: str, call: Callable[..., Any], *,
                 create: bool = True) -> None:
        self._client = client
        self.name = catalog_name(collection)
        self.where = where
        self._call = call
        if create:
            self._col = call("open catalog", client.get_or_create_collection, self.name, embedding_function=None)
        else:
            self._col = open_existing(client, self.name, where)

    # -- the state record ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """{"build": …, "updated": …, "writer": {"id", "host", "path"}, "files": digest}; {} when new."""
        got = self._call("get", self._col.get, ids=[STATE], include=["documents"])
        docs = got.get("documents") or []
        try:
            value = json.loads(docs[0]) if docs and docs[0] else {}
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def put_state(self, **values: Any) -> dict[str, Any]:
        return self._write_state({**self.state(), **values})

    def _write_state(self, state: dict[str, Any]) -> dict[str, Any]:
        self._call("upsert", self._col.upsert, ids=[STATE], embeddings=[_PLACEHOLDER],
                   documents=[json.dumps(state)], metadatas=[{"kind": "state"}])
        return state

    def claim(self, writer: dict[str, str], *, take_over: bool) -> dict[str, Any]:
        """Make ``writer`` (``writer_record``) the collection's writer and return the state as it
        was. One index folder's manifest describes a collection: another folder is refused
        (IndexMismatch) unless it ``take_over`` (and then replaces the chunks)."""
        state = self.state()
        other = state.get("writer") or {}
        if other.get("id") not in (None, writer["id"]) and not take_over:
            raise IndexMismatch(f"the index {self.where} is written by another index folder "
                                f"({other.get('host', '?')}:{other.get('path', '?')})",
                                hint="run `rag index` from that folder, or pass --rebuild to replace the collection "
                                     "with this folder's index")
        if other.get("id") != writer["id"]:
            self._write_state({**state, "writer": writer})
        return state

    def publish(self, *, build: Any, updated: Any, files: dict[str, tuple[int | None, list[str]]],
                writer: dict[str, str]) -> None:
        """The end of a run (or a copy): the file table first, then the build record and the
        stamp readers key their caches on. The table is compared only when its digest differs
        from the one published last (else the server's table is this one already)."""
        digest = table_digest(files)
        state = self.state()
        if state.get("files") != digest:
            self.sync_files(files)  # file records only: the state read above stays current
        self._write_state({**state, "build": build, "updated": updated, "files": digest, "writer": writer})

    # -- the file table --------------------------------------------------------------------
    def files(self) -> dict[str, tuple[int | None, list[str]]]:
        """{path: (mtime_ns, doc ids)} of every indexed file."""
        out: dict[str, tuple[int | None, list[str]]] = {}
        offset = 0
        while True:
            got = self._call("get", self._col.get, where={"kind": "file"}, include=["documents", "metadatas"],
                             limit=PAGE, offset=offset)
            for meta, doc in zip(got["metadatas"] or [], got["documents"] or []):
                mtime, docs = json.loads(doc or "[null, []]")  # exactly what the manifest holds
                out[str((meta or {}).get("path", ""))] = (mtime, list(docs))
            if len(got["ids"]) < PAGE:
                return out
            offset += PAGE

    def files_cached(self, path: Path, digest: Any) -> dict[str, tuple[int | None, list[str]]]:
        """``files()``, read from a local copy in ``path`` while the state's digest says the table
        has not changed (a folder of many files is not read from the server at every question)."""
        try:
            saved = json.loads(path.read_text())
            if digest and saved.get("where") == self.where and saved.get("digest") == digest:
                return {p: (m, list(d)) for p, (m, d) in saved["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        files = self.files()
        if digest and table_digest(files) == digest:  # only a table the state vouches for
            try:
                write_json_atomically(path, {"where": self.where, "digest": digest, "files": files})
            except OSError:
                pass
        return files

    def sync_files(self, files: dict[str, tuple[int | None, list[str]]]) -> bool:
        """Make the file table equal ``files``, writing only what differs; True if anything did."""
        have = self.files()
        changed = {p: v for p, v in files.items() if have.get(p) != (v[0], sorted(set(v[1])))}
        gone = [FILE + p for p in have if p not in files]
        items = sorted(changed.items())
        for i in range(0, len(items), PAGE):
            part = items[i:i + PAGE]
            self._call("upsert", self._col.upsert, ids=[FILE + p for p, _ in part],
                       embeddings=[_PLACEHOLDER] * len(part),
                       documents=[json.dumps([m, sorted(set(docs))]) for _, (m, docs) in part],
                       metadatas=[{"kind": "file", "path": p} for p, _ in part])
        for i in range(0, len(gone), PAGE):
            self._call("delete", self._col.delete, ids=gone[i:i + PAGE])
        return bool(changed or gone)

    def reset(self) -> None:
        """Forget the build and the file table; keep the writer (the folder that reset it goes on
        writing) and the stamp (``dirty:…`` while that run lasts)."""
        kept = {k: v for k, v in self.state().items() if k in ("writer", "updated")}
        self._call("delete_collection", self._client.delete_collection, self.name)
        self._col = self._call("create_collection", self._client.get_or_create_collection, self.name,
                               embedding_function=None)
        if kept:
            self.put_state(**kept)

