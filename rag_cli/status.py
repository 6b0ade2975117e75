"""`rag status`: what the index holds and how it was built, from its manifest alone.

It must be fast (a prompt or a shell loop may run it): no model is loaded, and chromadb is not
imported for an index in a folder, whose manifest knows the files, documents and chunk ids (after
a finished run exactly the ids the store holds). An index on a Chroma server (store.url) is read
from its catalog and collection, which needs the client.

The helpers here (``lock_holder``, ``folder_size``, ``read_stamp``, ``changed_settings``) are
shared with `rag doctor`.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_cli.config import Settings, all_keys, describe
from rag_cli.errors import IndexCorrupt, IndexNotFound
from rag_cli.index_dir import DIRTY, IndexPaths, is_dirty
from rag_cli.models import IndexStatus

if TYPE_CHECKING:
    from rag_cli.store.chroma import VectorStore

SERVER_PROBE_TIMEOUT = 10.0  # seconds: status and doctor never wait store.timeout (60 s) for a server


def read_stamp(value: Any) -> tuple[float | None, bool]:
    """(time, dirty) of a manifest's or catalog's ``updated`` value: a unix time, or
    ``"dirty:<time>"`` from the first write of a run until its end (the time the run began writing)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), False
    if is_dirty(value):
        try:
            return float(value[len(DIRTY):]), True
        except ValueError:
            return None, True
    return None, False


def lock_holder(path: Path) -> int | None:
    """The pid of the process holding the ``flock`` on ``path`` (the index lock), or None.

    Read from /proc/locks where there is one: a probe that takes the lock itself, even shared and
    for a moment, could make a `rag index` starting at that instant fail as busy. Elsewhere, a
    non-blocking shared lock is the probe (as `rag serve --status` does for its own lock)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    written = _pid_in(path)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read()
    except OSError:
        table = None
    if table is not None:
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in table.splitlines():
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2147631 0 EOF" (a waiter's: "1: -> FLOCK ...")
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device:
                return written or (int(parts[4]) if parts[4].lstrip("-").isdigit() else -1)
        return None
    from rag_cli.serve.protocol import flock_held

    return (written or -1) if flock_held(path) else None


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def folder_size(folder: Path) -> int:
    """Bytes the folder takes on disk (allocated blocks, like ``du``), symbolic links not followed."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    st = entry.stat(follow_symlinks=False)
                    total += getattr(st, "st_blocks", 0) * 512 or st.st_size
            except OSError:
                continue
    return total


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def changed_settings(settings: Settings) -> list[tuple[str, Any, Any, str]]:
    """(key, value, default, source) of every setting whose value is not its default."""
    out = []
    for key in all_keys():
        value, default = settings.get(key), describe(key)[1]
        if value != default:
            out.append((key, value, default, settings.sources.get(key, "default")))
    return out


def server_settings(settings: Settings) -> Any:
    """``settings.store`` with its timeout capped, for probes that must not wait long."""
    return replace(settings.store, timeout=min(settings.store.timeout, SERVER_PROBE_TIMEOUT))


def index_status(settings: Settings) -> IndexStatus:
    """The index of ``settings``: IndexNotFound (exit 4) when there is none."""
    from rag_cli.serve import client

    paths = IndexPaths(settings.index_dir)
    where, facts = _server_facts(settings, paths) if settings.store.url else ("", local_facts(paths))
    updated, dirty = read_stamp(facts.pop("updated"))
    serve = client.status(settings).to_dict()
    serve.pop("schema", None)
    llm = settings.llm
    return IndexStatus(
        index_dir=str(paths.root), store=where, size_bytes=folder_size(paths.root) if paths.root.is_dir() else 0,
        updated=updated, dirty=dirty, writer_pid=lock_holder(paths.lock),
        llm={"model": llm.model, "strong_model": llm.strong_model, "url": llm.url},
        changed_settings=tuple(changed_settings(settings)), serve=serve, **facts)


def local_facts(paths: IndexPaths) -> dict[str, Any]:
    """What the manifest of a local index says (build, updated, documents, chunks, file counts by
    status, roots): IndexNotFound without one, IndexCorrupt when it cannot be read."""
    try:
        return _read_manifest(paths)
    except sqlite3.DatabaseError as exc:
        raise IndexCorrupt(f"the manifest {paths.manifest} is damaged ({type(exc).__name__}: {exc})",
                           hint=f"delete {paths.root} and run `rag index PATH` to build the index again") from None


def _read_manifest(paths: IndexPaths) -> dict[str, Any]:
    manifest = paths.open_manifest()  # IndexNotFound when there is none
    try:
        records = manifest.files().values()
        statuses = [r.status for r in records]
        return {
            "build": manifest.get_meta("build") or {}, "updated": manifest.get_meta("updated"),
            "documents": len({doc for doc, _, _ in manifest.document_table()}), "chunks": manifest.chunk_count(),
            "files": {"total": len(statuses), **{s: statuses.count(s) for s in ("ok", "pending", "failed", "skipped")}},
            "roots": tuple(manifest.roots()),
        }
    finally:
        manifest.close()


def open_server_index(settings: Settings) -> tuple[VectorStore, dict[str, Any]]:
    """The store.url collection (probe timeouts) and its catalog state. IndexNotFound when there
    is no collection, or no build record and no run writing one."""
    from rag_cli.store.chroma import ChromaStore

    store = ChromaStore.on_server(server_settings(settings), create=False)  # IndexNotFound: no collection
    state = store.catalog.state()
    if not state.get("build") and not is_dirty(state.get("updated")):
        raise IndexNotFound(f"no index {store.where}", hint="run `rag index PATH` with this store.url, or "
                                                          "`rag index --to URL` from a folder with a local index")
    return store, state


def _server_facts(settings: Settings, paths: IndexPaths) -> tuple[str, dict[str, Any]]:
    from rag_cli.store.catalog import CATALOG_CACHE

    store, state = open_server_index(settings)
    assert store.catalog is not None  # a server store has one
    files = store.catalog.files_cached(paths.root / CATALOG_CACHE, state.get("files"))
    return store.where, {
        "build": state.get("build") or {}, "updated": state.get("updated"),
        "documents": len({doc for _, docs in files.values() for doc in docs}), "chunks": store.count(),
        "files": {"total": len(files), "ok": None, "pending": None, "failed": None, "skipped": None},
        "roots": (),
    }
