"""The checks of `rag doctor` about the index itself (group "index", first half): the index (the
local manifest, or the store.url server's catalog), its build record against the settings, the state
of the last run, and the index lock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rag_cli.doctor.base import FAIL, OK, WARN, CheckState, Found
from rag_cli.errors import ExitCode, IndexMismatch
from rag_cli.index_dir import IndexPaths, check_build
from rag_cli.index_record import open_index
from rag_cli.status import lock_holder, read_stamp


class IndexChecks(CheckState):
    """index, build record, run state, lock."""

    def check_index(self) -> Found:
        assert self.settings is not None
        # IndexNotFound, IndexCorrupt, StoreError: a failed check with their message and hint
        record = open_index(self.settings, complete=False, probe=True)
        written_here = record.written_here()
        files = record.file_counts() if written_here else {}
        chunks = None
        if written_here:  # what this folder's manifest says (for a server index too: it wrote it)
            chunks = record.chunk_count() if not record.server else _manifest_chunks(record.paths)
        self.index = {"build": record.build, "updated": record.updated, "pending": files.get("pending") or 0,
                      "chunks": chunks, "writer": written_here}
        if record.server:  # the storage checks count the server's collection, not a folder's
            self.store = record.store()
            w = record.writer or {}
            data: dict[str, Any] = {"writer": w or None, "this_folder_writes": written_here}
            detail = (f"{record.where}: reachable; written from {w.get('host', '?')}:{w.get('path', '?')}"
                      + (" (this folder)" if written_here else ""))
            fix = "run `rag index` in the folder that writes it to finish it"
        else:
            self.index["files"] = files["total"]
            self.index["documents"] = len({d.doc_id for d in record.documents()})
            data = {k: self.index[k] for k in ("files", "documents", "chunks", "pending")}
            detail = f"{record.where}: {files['total']} files, {self.index['documents']} documents, {chunks} chunks"
            fix = "run `rag index` to finish it"
        if record.incomplete():
            return Found(FAIL, record.incomplete(), fix, int(ExitCode.INDEX), data)
        return Found(OK, detail, data=data)

    def check_build_record(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        s = self.settings
        assert s is not None and self.index is not None
        from rag_cli.indexer import Indexer

        current = Indexer(s).current_build()  # cheap: no model is loaded
        recorded = self.index["build"]
        if self.store is not None:
            where = self.store.where
        else:
            assert self.paths is not None
            where = self.paths.root
        reading = {k: v for k, v in current.items() if k.startswith("embedding.")}
        data = {"recorded": recorded, "current": current}
        try:
            check_build(recorded, reading, where)
        except IndexMismatch as exc:
            return Found(FAIL, f"searching refuses it: {exc.message}", exc.hint or "", int(exc.exit_code), data)
        try:
            check_build(recorded, current, where)
        except IndexMismatch as exc:
            return Found(FAIL, f"`rag index` refuses it (searching works): {exc.message}", exc.hint or "",
                         int(exc.exit_code), data)
        r = recorded
        return Found(OK, f"matches the settings: {r.get('embedding.model')} ({r.get('embedding.dimension')} "
                     f"dimensions), {r.get('chunking.strategy')} chunks of {r.get('chunking.size')} tokens, "
                     f"overlap {r.get('chunking.overlap')}", data=data)

    def check_run_state(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None and self.paths is not None
        when, dirty = read_stamp(self.index["updated"])
        pending = self.index["pending"]
        holder = lock_holder(self.paths.lock)
        data = {"updated": when, "dirty": dirty, "pending_files": pending, "writer_pid": holder}
        if dirty or pending:
            since = f" since {_when(when)}" if when else ""
            if holder is not None:
                return Found(WARN, f"a `rag index` (pid {holder}) is writing now{since}", "wait for it to finish",
                             data=data)
            if self.store is not None and not self.index["writer"]:
                return Found(WARN, f"a run from the folder that writes {self.store.where} is writing it, or was "
                             f"interrupted{since}", "if no run is going on, run `rag index` in that folder to "
                             "finish it", data=data)
            what = (f"marked dirty{since}" if dirty else "") + (" and " if dirty and pending else "") + (
                f"{pending} file(s) left pending" if pending else "")
            return Found(FAIL, f"a `rag index` run was interrupted ({what}): searches still work, but the keyword "
                         "index is rebuilt for every question and some changes may be missing",
                         "run `rag index` to finish it", int(ExitCode.INDEX), data)
        return Found(OK, f"complete; last updated {_when(when)}" if when else "complete", data=data)

    def check_lock(self) -> Found:
        assert self.paths is not None
        holder = lock_holder(self.paths.lock)
        if holder is None:
            return Found(OK, "free: no `rag index` is writing", data={"path": str(self.paths.lock), "pid": None})
        return Found(WARN, f"held by a `rag index` (pid {holder}): another one would stop with exit code 7",
                     "wait for it to finish (or pass --wait SECONDS to the next `rag index`)",
                     data={"path": str(self.paths.lock), "pid": holder})


def _manifest_chunks(paths: IndexPaths) -> int:
    """The chunks this folder's manifest lists (for the folder that writes a server index)."""
    manifest = paths.open_manifest()
    try:
        return int(manifest.chunk_count())
    finally:
        manifest.close()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")
