"""`rag index --to URL`: copy a local index to a Chroma server without embedding anything again.

Chunks travel with their vectors, text and metadata, a page at a time; a chunk the server
already holds with the same content and record hash (its metadata) is not sent again, so an
interrupted copy resumes where it stopped, and a second copy sends only what changed. Chunks
on the server that the local index no longer holds are deleted. Then the catalog
(store/catalog.py) is published and this index folder becomes the collection's writer: with
``store.url`` set to the same server, later `rag index` runs update it incrementally.
"""

from __future__ import annotations

import time
from dataclasses import replace

from rag_cli.config import Settings
from rag_cli.errors import IndexCorrupt, IndexNotFound, InputError
from rag_cli.index_dir import IndexLock, IndexPaths, dirty_stamp
from rag_cli.models import CopyReport
from rag_cli.progress import NullProgress, Progress
from rag_cli.store.catalog import writer_record
from rag_cli.store.chroma import ChromaStore
from rag_cli.store.server import describe_server

PAGE = 1000


def copy_index(settings: Settings, url: str, *, replace_other: bool = False, lock_timeout: float | None = None,
               progress: Progress | None = None) -> CopyReport:
    """Copy the local index of ``settings`` to the Chroma server at ``url`` (tenant, database and
    collection from ``settings.store``). ``replace_other``: take over a collection that another
    index folder writes (its chunks are replaced)."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    paths = IndexPaths(settings.index_dir)
    timeout = settings.index.lock_timeout if lock_timeout is None else lock_timeout
    if settings.store.url:
        raise InputError(f"--to copies a local index, and this folder's index is {describe_server(settings.store)} "
                         "(store.url)", hint="unset store.url (and RAG_STORE_URL) to copy the local index in "
                                             f"{paths.root}")
    if not paths.exists():
        raise IndexNotFound(f"no index in {paths.root} to copy", hint="run `rag index PATH` first")
    with IndexLock(paths.lock, timeout, on_wait=progress.note):
        manifest = paths.open_manifest()
        try:
            build, updated = manifest.get_meta("build"), manifest.get_meta("updated")
            if not build or not isinstance(updated, float):
                raise IndexNotFound(f"the index in {paths.root} is incomplete (a `rag index` run was interrupted)",
                                    hint="run `rag index` to finish it, then copy it")
            writer = writer_record(manifest, paths.root)
            table = manifest.file_table()
            source = ChromaStore(paths.chroma)
            total, listed = source.count(), manifest.chunk_count()
            if total != listed:
                raise IndexCorrupt(f"the index in {paths.root} holds {total} chunks where its manifest lists {listed}",
                                   hint="run `rag index` to repair it, then copy it")
            target = ChromaStore.on_server(replace(settings.store, url=url))
            catalog = target.catalog
            catalog.claim(writer, take_over=replace_other)
            catalog.put_state(updated=dirty_stamp())  # readers: a copy is under way
            progress.update("copy", total=total)
            sent = skipped = 0
            local_ids: set[str] = set()
            for offset in range(0, total, PAGE):
                ids, texts, metas, vectors = source.page(offset, PAGE)
                local_ids.update(ids)
                there = target.stored_records(ids)  # content and record hash: metadata changes travel too
                keep = [i for i, (cid, meta) in enumerate(zip(ids, metas))
                        if there.get(cid) != (meta.get("hash", ""), meta.get("record", ""))]
                if keep:
                    target.upsert_raw([ids[i] for i in keep], [vectors[i] for i in keep], [texts[i] for i in keep],
                                      [metas[i] for i in keep])
                sent += len(keep)
                skipped += len(ids) - len(keep)
                progress.update("copy", advance=len(ids))
            stale = [cid for cid in target.all_ids() if cid not in local_ids]
            target.delete(stale)
            catalog.publish(build=build, updated=updated, files=table, writer=writer)
            return CopyReport(source=str(paths.root), target=target.where, chunks_sent=sent, chunks_skipped=skipped,
                              chunks_deleted=len(stale), chunks_total=target.count(), files=len(table),
                              seconds=time.perf_counter() - started)
        finally:
            manifest.close()

