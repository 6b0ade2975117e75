"""The checks of `rag doctor` about the index itself (group "index", first half): the index (the
local manifest, or the store.url server's catalog), its build record against the settings, the state
of the last run, and the index lock."""

from __future__ import annotations

from datetime import datetime

from rag_cli.doctor.base import FAIL, OK, WARN, CheckState, Found
from rag_cli.errors import ExitCode, IndexMismatch
from rag_cli.index_dir import check_build
from rag_cli.status import local_facts, lock_holder, open_server_index, read_stamp


class IndexChecks(CheckState):
    """index, build record, run state, lock."""

    def check_index(self) -> Found:
        if self.settings.store.url:  # type: ignore[union-attr]
            return self._open_server_index()
        paths = self.paths
        assert paths is not None
        facts = local_facts(paths)  # IndexNotFound, IndexCorrupt: a failed check with their message and hint
        info = {"build": facts["build"], "updated": facts["updated"], "chunks": facts["chunks"],
                "files": facts["files"]["total"], "pending": facts["files"]["pending"],
                "documents": facts["documents"], "writer": True}
        self.index = info
        data = {k: info[k] for k in ("files", "documents", "chunks", "pending")}
        if not info["build"]:
            return Found(FAIL, f"the index in {paths.root} has no build record: its first run, or a --rebuild, did "
                         "not finish", "run `rag index` to finish it", int(ExitCode.INDEX), data)
        return Found(OK, f"{paths.root}: {info['files']} files, {info['documents']} documents, "
                     f"{info['chunks']} chunks", data=data)

    def _open_server_index(self) -> Found:
        assert self.settings is not None and self.paths is not None
        self.store, state = open_server_index(self.settings)  # StoreError, IndexNotFound
        writer = state.get("writer") or {}
        mine = None
        if self.paths.exists():
            manifest = self.paths.open_manifest()
            try:
                mine = manifest.get_meta("index_id"), manifest.chunk_count()
            finally:
                manifest.close()
        is_writer = mine is not None and writer.get("id") == mine[0]
        self.index = {"build": state.get("build"), "updated": state.get("updated"), "pending": 0,
                      "chunks": mine[1] if is_writer else None, "writer": is_writer}
        data = {"writer": writer or None, "this_folder_writes": is_writer}
        if not state.get("build"):  # a run is writing it (open_server_index raised IndexNotFound otherwise)
            return Found(FAIL, f"the index {self.store.where} is not complete yet (a `rag index` or `rag index "
                         f"--to` from {writer.get('host', '?')}:{writer.get('path', '?')} is writing it, or was "
                         "interrupted)", "run `rag index` in the folder that writes it to finish it",
                         int(ExitCode.INDEX), data)
        return Found(OK, f"{self.store.where}: reachable; written from {writer.get('host', '?')}:"
                     f"{writer.get('path', '?')}" + (" (this folder)" if is_writer else ""), data=data)

    def check_build_record(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        s = self.settings
        assert s is not None and self.index is not None
        from rag_cli.indexer import Indexer

        current = Indexer(s).current_build()  # cheap: no model is loaded
        recorded = self.index["build"]
        where = self.store.where if self.store is not None else self.paths.root  # type: ignore[union-attr]
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


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")
