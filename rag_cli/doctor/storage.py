"""The checks of `rag doctor` about where the index is kept (group "index", second half): the
vector store, the keyword index, whether their chunk counts agree with the manifest, the free disk
space and the index folder's owner and mode."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from rag_cli.doctor.base import FAIL, OK, SKIP, WARN, CheckState, Found
from rag_cli.errors import ExitCode
from rag_cli.status import folder_size, human_bytes, read_stamp

log = logging.getLogger(__package__)  # "rag_cli.doctor", the name the -v log has always shown

DISK_WARN = 1 << 30  # warn below 1 GiB free, or below twice the index's size
DISK_FLOOR = 100 << 20  # fail below 100 MiB: a run could not even write its logs
REINDEX = "run `rag index --rebuild` to rebuild it"


class StorageChecks(CheckState):
    """vector store, keyword index, counts, disk space, folder permissions."""

    def check_vector_store(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None and self.paths is not None
        if self.store is None:
            if not (self.paths.chroma / "chroma.sqlite3").is_file():
                return Found(FAIL, f"the vector store is missing ({self.paths.chroma}): searches find nothing",
                             REINDEX, int(ExitCode.INDEX))
            from rag_cli.store.chroma import ChromaStore

            count, where = ChromaStore(self.paths.chroma).count(), f"in {self.paths.chroma}"
        else:
            count, where = self.store.count(), self.store.where
        self.index["store_chunks"] = count
        return Found(OK, f"{count} chunks {where}", data={"chunks": count})

    def check_keyword_index(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        from rag_cli.store.keyword import KeywordIndex

        assert self.index is not None and self.paths is not None
        folder = self.paths.keyword
        server = self.store is not None
        rebuilt_by = ("the next question rebuilds it from the server" if server else "run `rag index` to rebuild it")
        if not folder.exists():
            return Found(OK if server else WARN, f"not built yet in {folder}: " + (
                "the next question builds it from the server" if server else
                "every question builds it in memory from the store"), "" if server else rebuilt_by)
        tag = KeywordIndex.saved_tag(folder)
        try:
            loaded = KeywordIndex.load(folder)  # None for what it expects to meet; bm25s may raise others
        except Exception:  # noqa: BLE001 - damaged arrays
            log.debug("cannot load the keyword index in %s", folder, exc_info=True)
            loaded = None
        if tag is None or loaded is None:
            return Found(FAIL, f"the keyword index in {folder} is damaged (it cannot be read)",
                         f"delete {folder}; " + rebuilt_by, int(ExitCode.INDEX))
        data = {"chunks": len(loaded.ids), "documents": len(loaded.doc_ids), "tag": tag}
        if tag != self.index["updated"]:
            self.index["keyword_chunks"] = None
            if server or read_stamp(self.index["updated"])[1]:
                return Found(OK, "older than the store: the next question rebuilds it" if server else
                             "older than the store while a run is unfinished (see run state)", data=data)
            return Found(WARN, f"older than the store (tag {tag!r}, manifest {self.index['updated']!r}): every "
                         "question builds it in memory", rebuilt_by, data=data)
        self.index["keyword_chunks"] = len(loaded.ids)
        return Found(OK, f"{len(loaded.ids)} chunks, {len(loaded.doc_ids)} documents; its tag matches the "
                     + ("server's stamp" if server else "manifest"), data=data)

    def check_counts(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None
        counts = {"manifest": self.index.get("chunks"), "vector store": self.index.get("store_chunks"),
                  "keyword index": self.index.get("keyword_chunks")}
        known = {k: v for k, v in counts.items() if v is not None}
        data = {k.replace(" ", "_"): v for k, v in counts.items()}
        if len(known) < 2:
            return Found(SKIP, "fewer than two counts to compare", data=data)
        listed = ", ".join(f"{k} {v}" for k, v in known.items())
        unfinished = read_stamp(self.index["updated"])[1] or self.index["pending"]
        store, manifest = known.get("vector store"), known.get("manifest")
        if unfinished and not (store is not None and manifest is not None and store > manifest):
            return Found(OK, f"{listed} (a run is unfinished: the manifest may know more ids than the store holds)",
                         data=data)
        if len(set(known.values())) == 1:
            return Found(OK, f"{listed}: they agree", data=data)
        if store is not None and manifest is not None and store != manifest:
            fix = REINDEX
        else:
            assert self.paths is not None
            fix = f"delete {self.paths.keyword} and run `rag index` to rebuild it"
        return Found(FAIL, f"the chunk counts disagree: {listed}", fix, int(ExitCode.INDEX), data)

    def check_disk(self) -> Found:
        assert self.paths is not None
        folder = self.paths.root
        probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        usage = shutil.disk_usage(probe)
        size = folder_size(folder) if folder.is_dir() else 0
        want = max(DISK_WARN, 2 * size)
        data = {"free_bytes": usage.free, "index_bytes": size, "path": str(probe)}
        detail = f"{human_bytes(usage.free)} free where the index lives ({probe}); " + (
            f"the index takes {human_bytes(size)}" if folder.is_dir() else "no index folder yet")
        if usage.free < DISK_FLOOR:
            return Found(FAIL, detail, f"free disk space (at least {human_bytes(want)}), or set index.path to "
                         "another disk", int(ExitCode.INDEX), data)
        if usage.free < want:
            return Found(WARN, detail + f" (less than {human_bytes(want)}: a --rebuild or a big run may not fit)",
                         f"free disk space (at least {human_bytes(want)})", data=data)
        return Found(OK, detail, data=data)

    def check_folder(self) -> Found:
        assert self.paths is not None
        folder = self.paths.root
        if not folder.is_dir():
            return Found(SKIP, f"{folder} does not exist yet")
        st = folder.stat()
        mode = st.st_mode & 0o777
        data = {"mode": f"{mode:04o}", "uid": st.st_uid}
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return Found(FAIL, f"{folder} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
                         f"chown -R {os.getuid()} {folder}", int(ExitCode.INDEX), data)
        if mode & 0o077:
            return Found(WARN, f"{folder} has mode {mode:04o}: other users can read the text of your documents",
                         f"chmod 700 {folder}", data=data)
        return Found(OK, f"{folder}: mode {mode:04o}, yours", data=data)
