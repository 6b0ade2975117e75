"""`rag status`: what the index holds and how it was built, from its record alone (index_record.py).

It must be fast (a prompt or a shell loop may run it): no model is loaded, and chromadb is not
imported for an index in a folder, whose manifest knows the files, documents and chunk ids (after
a finished run exactly the ids the store holds). An index on a Chroma server (store.url) is read
from its catalog and collection, which needs the client.

The helpers here (``lock_holder``, ``folder_size``, ``read_stamp``, ``changed_settings``) are
shared with `rag doctor`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rag_cli.config import Settings, all_keys, describe
from rag_cli.index_dir import DIRTY, is_dirty
from rag_cli.index_record import open_index
from rag_cli.models import IndexStatus


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


def index_status(settings: Settings) -> IndexStatus:
    """The index of ``settings``: IndexNotFound (exit 4) when there is none."""
    from rag_cli.serve import client

    record = open_index(settings, complete=False, probe=True)  # IndexNotFound, IndexCorrupt, StoreError
    paths = record.paths
    updated, dirty = read_stamp(record.updated)
    serve = client.status(settings).to_dict()
    serve.pop("schema", None)
    llm = settings.llm
    return IndexStatus(
        index_dir=str(paths.root), store=record.server,
        size_bytes=folder_size(paths.root) if paths.root.is_dir() else 0,
        updated=updated, dirty=dirty, writer_pid=lock_holder(paths.lock),
        llm={"model": llm.model, "strong_model": llm.strong_model, "url": llm.url},
        changed_settings=tuple(changed_settings(settings)), serve=serve, build=record.build,
        documents=len({d.doc_id for d in record.documents()}), chunks=record.chunk_count(),
        files=record.file_counts(), roots=record.roots(), query_log=_query_log(settings))


def _query_log(settings: Settings) -> dict[str, Any]:
    from rag_cli.querylog import QueryLog

    qlog = QueryLog.of(settings)
    return {"enabled": settings.ask.log, "path": str(qlog.path), "size_bytes": qlog.size()}
