"""`rag index`: walk, load, chunk, embed and store, incrementally and safely.

A reader thread loads and chunks files while the main thread embeds and writes, so
parsing overlaps with the model; the reader runs ahead by a bounded number of chunks
(memory stays flat), and a file with many documents (a JSONL corpus) comes in parts, so
its first chunks are embedded while the rest are still being cut. Files are written in
groups; for each group the manifest first registers the new chunk ids (and marks the
files pending), then vectors are upserted and stale chunks deleted, then the files are
marked done. A run killed at any point leaves an index that answers from what was
committed, and the next run finishes the job with no duplicate and no orphan chunk.
Chunks whose stored hash still matches are never embedded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rag_cli import observe
from rag_cli.config import Settings
from rag_cli.errors import DocumentError, InputError
from rag_cli.index_dir import IndexLock, IndexPaths, build_record, check_build, dirty_stamp
from rag_cli.ingest import ocr, pdf_layout
from rag_cli.ingest.chunkers import Chunker, make_chunker
from rag_cli.ingest.formats import loader_for
from rag_cli.ingest.loaders import PdfLimits, PdfLoader, read_bytes
from rag_cli.ingest.manifest import FAILED, OK, PENDING, SKIPPED, FileRecord, Manifest
from rag_cli.ingest.readahead import Channel
from rag_cli.ingest.tokens import load_token_counter
from rag_cli.ingest.walk import FoundFile, assign_doc_ids, walk
from rag_cli.model_files import embedding_prefixes
from rag_cli.models import Chunk, Document, FileOutcome, FileStatus, IndexReport
from rag_cli.progress import NullProgress, Progress
from rag_cli.store.catalog import Catalog, writer_record
from rag_cli.store.chroma import ChromaStore, LazyChromaStore, VectorStore, chunk_metadata, open_store
from rag_cli.store.embedders import Embedder, embedder_from_settings
from rag_cli.store.keyword import KeywordIndex

log = logging.getLogger(__name__)

GROUP_CHUNKS = 1024  # chunks per write group: several small files, or parts of a big one
EMBED_SLICE = 256  # chunks upserted at a time
PART_CHUNKS = 256  # a file with many documents is handed over in parts of about this many chunks
READ_AHEAD_CHUNKS = 2 * GROUP_CHUNKS  # chunks the reader may hold ready beyond the group being written
READ_AHEAD_PARTS = 4096  # and parts (unchanged or failed files hold no chunks)
GONE_GROUP = 256  # files that left a root, removed from the store and the manifest at a time


@dataclass
class _Prepared:
    """A file to (re)index. The reader fills in what loading tells before it hands over the
    file's first part; the writer keeps the tally of the new version's chunk ids."""

    found: FoundFile
    doc_id: str  # the file's document id (assign_doc_ids): a JSONL file's documents have their records' ids
    size: int
    mtime_ns: int
    previous: FileRecord | None
    sha256: str = ""
    unchanged: bool = False
    error: str = ""
    documents: int = 0
    doc_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chunk_ids: set[str] = field(default_factory=set)  # writer only: every chunk id written so far

    @property
    def path(self) -> str:
        return str(self.found.path)


@dataclass
class _Part:
    """Chunks of one file, in order; most files are one part (``first`` and ``last``)."""

    file: _Prepared
    chunks: list[Chunk]
    first: bool
    last: bool
    warnings: list[str] = field(default_factory=list)  # documents that could not be cut
    dropped: int = 0


@dataclass
class _Timings:
    walk: float = 0.0  # finding the files and comparing them with the manifest
    open: float = 0.0  # opening the vector store (importing chromadb), when anything is written
    model: float = 0.0  # loading the embedding model, when anything is embedded
    load: float = 0.0
    chunk: float = 0.0
    embed: float = 0.0
    write: float = 0.0
    keyword: float = 0.0
    wait: float = 0.0  # the writer waiting for the reader (parsing not hidden behind embedding)


class Indexer:
    """Indexes paths into one index folder. Heavy parts (model, store) come in ready-made
    or are built from settings on first use."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None,
                 progress: Progress | None = None) -> None:
        self.settings = settings
        self.paths = IndexPaths(settings.index_dir)
        self.progress = progress or NullProgress()
        e = settings.embedding
        self.counter = load_token_counter(e.model, str(settings.base_dir))
        self.prefixes = embedding_prefixes(e, settings.base_dir)
        self.embedder = embedder or embedder_from_settings(e, base_dir=settings.base_dir, query_prefix=self.prefixes[0])
        self.batch_size = max(1, e.batch_size)
        c = settings.chunking
        self.chunker: Chunker = make_chunker(
            c.strategy, self.counter, size=c.size, overlap=c.overlap, min_size=c.min_size,
            context_header=c.context_header, document_prefix=self.prefixes[1])
        self.timings = _Timings()
        self._chunks_seen = 0
        self._dirty = False
        self._before: object = None
        self._catalog: Catalog | None = None  # a server index's catalog (store/catalog.py)
        self._claimed: dict[str, str] = {}  # {doc id: path} of the files admitted to this run's writes
        # A PDF read under another key is read again: another index.ocr, or another way of
        # rebuilding the text layer's paragraphs (pdf_layout.READ_KEY).
        self.pdf_read_key = f"{ocr.read_key(settings.index.ocr)} {pdf_layout.READ_KEY}"
        self._ocr_pages = 0  # pages to recognise so far this run (the "ocr" progress total)

    # -- the run ------------------------------------------------------------------------
    def run(self, targets: Sequence[Path] = (), *, rebuild: bool = False,
            lock_timeout: float | None = None) -> IndexReport:
        started = time.perf_counter()
        self.paths.create()
        timeout = self.settings.index.lock_timeout if lock_timeout is None else lock_timeout
        with IndexLock(self.paths.lock, timeout, on_wait=self.progress.note):
            manifest = self.paths.open_manifest(create=True, set_damaged_aside=rebuild)
            try:
                store = LazyChromaStore.for_settings(self.settings, self._open_store)
                if not rebuild and not store.on_server:
                    self.paths.check_vectors(manifest)
                lost = False
                if store.on_server:
                    self._catalog = store.catalog
                    lost = self._claim(manifest, rebuild)
                self._prepare_index(manifest, store, rebuild, lost)
                roots = self._roots(manifest, targets)
                with manifest.transaction():  # now: a run killed midway is finished by a bare `rag index`
                    for root in roots:
                        manifest.add_root(str(root))
                outcomes, written, reused, deleted = self._sync(manifest, store, roots)
                changed = rebuild or written or deleted or any(
                    o.status in (FileStatus.ADDED, FileStatus.UPDATED, FileStatus.REMOVED)
                    for o in outcomes)
                with manifest.transaction():
                    updated = manifest.get_meta("updated")
                    if changed or self._dirty or not isinstance(updated, float):
                        # The answer cache and the keyword index key on this value.
                        updated = time.time() if changed or not isinstance(self._before, float) else self._before
                        manifest.set_meta("updated", updated)
                if self._catalog is not None:
                    self._publish(manifest, updated)
                self._refresh_keyword_index(store, updated)
                # Nothing written: the store holds exactly the ids the manifest registered (every
                # file is settled), so it need not be opened to count them.
                total = store.count() if store.opened else manifest.chunk_count()
            finally:
                manifest.close()
        t = self.timings
        return IndexReport(
            index_path=str(self.paths.root), files=tuple(outcomes), chunks_written=written, chunks_reused=reused,
            chunks_deleted=deleted, chunks_total=total, seconds=time.perf_counter() - started,
            timings={"walk": t.walk, "load": t.load, "chunk": t.chunk, "open": t.open, "model": t.model,
                     "embed": t.embed, "write": t.write, "keyword": t.keyword, "wait": t.wait},
            rebuilt=rebuild, store=self._catalog.where if self._catalog is not None else "")

    def _open_store(self) -> ChromaStore:
        t0 = time.perf_counter()
        with observe.span("index.open"):
            store = open_store(self.settings, self.paths.chroma)
        self.timings.open += time.perf_counter() - t0
        return store

    def _claim(self, manifest: Manifest, rebuild: bool) -> bool:
        """Make this folder the server collection's writer (Catalog.claim). True when the manifest
        no longer describes the collection (it was dropped, or rebuilt from another folder) and
        must start over. (A collection this folder writes but whose first run was interrupted
        has no build record yet: the run goes on from what the manifest knows.)"""
        assert self._catalog is not None
        me = writer_record(manifest, self.paths.root)
        state = self._catalog.claim(me, take_over=rebuild)
        lost = manifest.get_meta("build") is not None and (state.get("writer") or {}).get("id") != me["id"]
        if lost and not rebuild:
            self.progress.note("the server collection does not hold this folder's index: indexing everything "
                               "again (`rag index --to URL` copies a local index without embedding it again)")
        return lost

    def _publish(self, manifest: Manifest, updated: object) -> None:
        """Give readers on other machines what the manifest tells local ones: the file table
        first, then the build record and the stamp they key their caches on."""
        assert self._catalog is not None
        self._catalog.publish(build=manifest.get_meta("build"), updated=updated, files=manifest.file_table(),
                              writer=writer_record(manifest, self.paths.root))

    def _mark_dirty(self, manifest: Manifest) -> None:
        """Before the first write to the store: until the run ends, readers know that the
        keyword index and cached answers may not match the store."""
        if not self._dirty:
            self._before = manifest.get_meta("updated")
            dirty = dirty_stamp()
            with manifest.transaction():
                manifest.set_meta("updated", dirty)
            if self._catalog is not None:
                self._catalog.put_state(updated=dirty)
            self._dirty = True

    def _refresh_keyword_index(self, store: VectorStore, updated: object) -> None:
        if KeywordIndex.saved_tag(self.paths.keyword) == updated:
            return
        t0, opened = time.perf_counter(), self.timings.open
        with observe.span("index.keyword"):
            ids, texts, metas = store.all_chunks()
            KeywordIndex.build(ids, texts, metas, tag=updated).save(self.paths.keyword)
        self._add("keyword", t0, opened)

    def _add(self, stage: str, since: float, opened: float) -> None:
        """Add the time since ``since`` to a stage, less the store's opening meanwhile (``opened``:
        the "open" time then): the stages do not overlap on the writer's thread."""
        spent = time.perf_counter() - since - (self.timings.open - opened)
        setattr(self.timings, stage, getattr(self.timings, stage) + spent)

    def current_build(self) -> dict[str, object]:
        """The build record these settings give (what the index must have been built with)."""
        return build_record(self.settings, self.embedder.name, self.embedder.dimension, self.chunker.size,
                            self.prefixes)

    def _prepare_index(self, manifest: Manifest, store: VectorStore, rebuild: bool, lost: bool = False) -> None:
        current = self.current_build()
        recorded = manifest.get_meta("build")
        if not rebuild:
            check_build(recorded, current, self.paths.root)
        if rebuild or recorded is None or lost:
            # No build record: a new index, or a rebuild that was interrupted. Forget files
            # first, then vectors, then write the record: a kill in between repeats this.
            self._mark_dirty(manifest)
            with manifest.transaction():
                manifest.set_meta("build", None)
                manifest.clear()
            store.reset()
            with manifest.transaction():
                manifest.set_meta("build", current)

    def _roots(self, manifest: Manifest, targets: Sequence[Path]) -> list[Path]:
        if targets:
            missing = [str(t) for t in targets if not t.exists()]
            if missing:
                raise InputError(f"no such file or folder: {', '.join(missing)}")
            return [Path(os.path.abspath(t)) for t in targets]
        roots = [Path(r) for r in manifest.roots(in_order_added=True)]
        if not roots:
            raise InputError("nothing to index: give a folder or file", hint="rag index ./docs")
        return [r for r in roots if r.exists()] or roots

    # -- syncing files --------------------------------------------------------------------
    def _sync(self, manifest: Manifest, store: VectorStore,
              roots: list[Path]) -> tuple[list[FileOutcome], int, int, int]:
        known = manifest.files()
        self._claimed = {}
        found: dict[str, FoundFile] = {}
        outcomes: list[FileOutcome] = []
        include, exclude = self.settings.index.include, self.settings.index.exclude
        t0 = time.perf_counter()
        with observe.span("index.walk", roots=len(roots)):
            for root in roots:
                if not root.exists():
                    continue
                result = walk(root, include=include, exclude=exclude, skip=[self.paths.root])
                for f in result.files:
                    found.setdefault(str(f.path), f)
                outcomes.extend(FileOutcome(p, FileStatus.FAILED, reason=r) for p, r in result.errors)
        self.timings.walk += time.perf_counter() - t0

        # Files of these roots that are no longer there (or no longer selected) leave the index.
        deleted = 0
        gone = [rec for path, rec in known.items() if path not in found and _under_any(path, rec.root, roots)]
        t0, opened = time.perf_counter(), self.timings.open
        # In groups: a folder of many files moved away costs a few store calls and transactions, not
        # one each (the store first, then the manifest: it still knows every id the store may hold).
        for i in range(0, len(gone), GONE_GROUP):
            group_gone = gone[i:i + GONE_GROUP]
            self._mark_dirty(manifest)
            ids = set().union(*(manifest.chunk_ids(old.path) for old in group_gone))
            store.delete(sorted(ids))
            with manifest.transaction():
                for old in group_gone:
                    manifest.remove_file(old.path)
            deleted += len(ids)
            outcomes.extend(FileOutcome(old.path, FileStatus.REMOVED, old.documents, old.chunks) for old in group_gone)
        self._add("write", t0, opened)

        t0 = time.perf_counter()
        for old in gone:
            del known[old.path]
        doc_ids = assign_doc_ids(list(found.values()), {path: rec.doc_id for path, rec in known.items()},
                                 holder=lambda doc: manifest.owners([doc], "").get(doc))
        todo: list[_Prepared] = []
        pdf_limits = PdfLimits.from_settings(self.settings.index)
        for key, f in found.items():
            rec = known.get(key)
            try:
                st = os.stat(f.path)
            except OSError as exc:
                outcomes.append(FileOutcome(key, FileStatus.FAILED, reason=f"cannot read: {exc.strerror}"))
                continue
            # A PDF that met a bound (index.pdf_*) raised since is read again, though unchanged, and
            # so is one read under another index.ocr (or before the OCR extra was installed).
            if (rec and rec.size == st.st_size and rec.mtime_ns == st.st_mtime_ns and rec.status != PENDING
                    and rec.doc_id == doc_ids[key] and not pdf_limits.may_read_more((rec.reason, *rec.warnings))
                    and rec.read_with == self._read_key(key)):
                outcomes.append(_cached_outcome(rec))  # not read at all
                continue
            todo.append(_Prepared(f, doc_ids[key], st.st_size, st.st_mtime_ns, rec))
        self.timings.walk += time.perf_counter() - t0

        self.progress.update("files", total=len(found), advance=len(found) - len(todo))
        written = reused = 0
        group: list[_Part] = []
        in_group = 0
        with self._read_ahead(todo) as parts:  # leaving it (an error, Ctrl-C) stops the reader
            for part in parts:
                if not self._admit(manifest, store, part, outcomes):
                    continue
                group.append(part)
                in_group += len(part.chunks)
                # A full group gives the model long runs of similar lengths to batch; when the reader
                # has nothing ready (the run's start, slow PDFs) the model works on what there is.
                if in_group >= GROUP_CHUNKS or (in_group >= self.batch_size and not parts.ready()):
                    w, r, d, done = self._write_group(manifest, store, group)
                    written, reused, deleted, group, in_group = written + w, reused + r, deleted + d, [], 0
                    outcomes.extend(done)
        if group:
            w, r, d, done = self._write_group(manifest, store, group)
            written, reused, deleted = written + w, reused + r, deleted + d
            outcomes.extend(done)
        return sorted(outcomes, key=lambda o: o.path), written, reused, deleted

    def _admit(self, manifest: Manifest, store: VectorStore, part: _Part, outcomes: list[FileOutcome]) -> bool:
        """Whether ``part`` joins the next write group; a file settled at its first part
        (unchanged, failed, empty) gets its outcome here instead."""
        item = part.file
        item.warnings.extend(part.warnings)  # documents that could not be cut
        item.documents -= part.dropped
        if part.first:
            outcome = self._settle(manifest, store, part)
            if outcome is not None:
                self.progress.update("files", advance=1)
                outcomes.append(outcome)
                if outcome.status in (FileStatus.FAILED, FileStatus.SKIPPED) or outcome.warnings or outcome.notes:
                    self.progress.note(_describe_problem(outcome))
                return False
        elif item.error:  # refused at its first part (a document id another file holds)
            return False
        return True

    def _read_ahead(self, todo: list[_Prepared]) -> _Parts:
        """Load and chunk ``todo`` on a reader thread, yielding each file's parts as they are ready."""
        return _Parts(self, todo)

    def _read(self, todo: list[_Prepared], channel: Channel[_Part | BaseException | None]) -> None:
        """The reader thread (one span: its load and chunk times are attributes)."""
        try:
            with observe.span("index.read", files=len(todo)) as span, ocr.reporting(self._on_ocr_page):
                for item in todo:
                    if not self._load_and_chunk(item, lambda part: channel.put(part, len(part.chunks))):
                        return  # the writer has stopped
                span.set_attributes({"rag.load_seconds": round(self.timings.load, 4),
                                     "rag.chunk_seconds": round(self.timings.chunk, 4)})
            channel.put(None)
        except BaseException as exc:  # a bug: hand it to the main thread
            channel.put(exc)

    def _load_and_chunk(self, item: _Prepared, emit: Callable[[_Part], bool]) -> bool:
        """Read, load and cut one file, handing over its parts; False when ``emit`` refuses."""
        t0 = time.perf_counter()
        path = item.found.path
        documents: list[Document] = []
        try:
            data = read_bytes(path)
            item.sha256 = hashlib.sha256(data).hexdigest()
            prev = item.previous
            limits = PdfLimits.from_settings(self.settings.index)
            if (prev and prev.status == OK and prev.sha256 == item.sha256 and prev.doc_id == item.doc_id
                    and not limits.may_read_more(prev.warnings) and prev.read_with == self._read_key(item.path)):
                item.unchanged = True  # touched, not changed
            else:
                loader = loader_for(path, limits, self.settings.index.ocr)
                if loader is None:  # pragma: no cover - walk() only yields supported files
                    raise DocumentError("unsupported file type")
                loaded = loader.load(path, item.doc_id, data)
                documents, item.warnings, item.notes = loaded.documents, loaded.warnings, loaded.notes
                item.documents = len(documents)
                item.doc_ids = [doc.doc_id for doc in documents]
        except DocumentError as exc:
            item.error = exc.reason
        except MemoryError:
            item.error = "too large to load in memory"
        except Exception as exc:  # a loader bug must not stop the run
            log.debug("unexpected error reading %s", path, exc_info=True)
            item.error = f"unexpected error: {type(exc).__name__}: {exc}"
        data = b""  # the documents hold the text now
        t1 = time.perf_counter()
        self.timings.load += t1 - t0
        single = len(documents) == 1
        documents.reverse()  # popped in order, each one freed once it is cut
        part = _Part(item, [], first=True, last=False)
        while documents:
            doc = documents.pop()
            try:
                part.chunks.extend(self.chunker.chunk(doc))
            except Exception as exc:  # a chunker bug must not stop the run
                log.debug("unexpected error cutting %s in %s", doc.doc_id, path, exc_info=True)
                reason = ("too large to load in memory" if isinstance(exc, MemoryError)
                          else f"unexpected error: {type(exc).__name__}: {exc}")
                if single:
                    item.error = reason
                    break
                # One record of a corpus: dropped with a warning, like a bad JSONL line.
                part.warnings.append(f"document {doc.doc_id!r} could not be cut into chunks ({reason})")
                part.dropped += 1
            # The first part is one batch, so that the model starts at once.
            if documents and len(part.chunks) >= (min(self.batch_size, PART_CHUNKS) if part.first else PART_CHUNKS):
                self.timings.chunk += time.perf_counter() - t1
                if not emit(part):
                    return False
                part = _Part(item, [], first=False, last=False)
                t1 = time.perf_counter()
        self.timings.chunk += time.perf_counter() - t1
        part.last = True
        if item.error:  # only a single document fails the file, so this is the first part
            part.chunks = []
        return emit(part)

    def _record(self, item: _Prepared, status: str, **changes: Any) -> FileRecord:
        rec = FileRecord(path=item.path, root=str(item.found.root), doc_id=item.doc_id,
                         size=item.size, mtime_ns=item.mtime_ns, sha256=item.sha256, status=status, reason="",
                         documents=item.documents, chunks=len(item.chunk_ids), warnings=tuple(item.warnings),
                         read_with=self._read_key(item.path))
        return replace(rec, **changes)

    def _read_key(self, path: str) -> str:
        """How a file is read now, beyond its bytes (FileRecord.read_with): "" but for PDFs."""
        return self.pdf_read_key if Path(path).suffix.lower() in PdfLoader.suffixes else ""

    def _on_ocr_page(self, source: str, page: int, done: int, total: int) -> None:
        """OCR progress from the reader thread (ingest/ocr.py report): a note per file, a bar per page."""
        if done == 0:
            self._ocr_pages += total
            self.progress.note(f"OCR: {Path(source).name}: recognising {total} page(s) without a text layer"
                               if self.settings.index.ocr == "auto" else
                               f"OCR: {Path(source).name}: recognising {total} page(s)")
            self.progress.update("ocr", total=self._ocr_pages)
        else:
            self.progress.update("ocr", advance=1)

    def _settle(self, manifest: Manifest, store: VectorStore, part: _Part) -> FileOutcome | None:
        """The outcome of a file that needs no vectors written (unchanged, failed, empty), or
        None when its first part joins the next write group."""
        item = part.file
        path, prev = item.path, item.previous
        if item.unchanged:
            assert prev is not None
            with manifest.transaction():
                manifest.put_file(replace(prev, size=item.size, mtime_ns=item.mtime_ns))
            return FileOutcome(path, FileStatus.UNCHANGED, prev.documents, prev.chunks, warnings=prev.warnings)
        if not item.error and part.chunks:
            # A file's own id is unique (assign_doc_ids), but a JSONL record's is the corpus's: another file of
            # the index, or one before it in this run (not registered yet), may hold it. The first one keeps it.
            docs = sorted(set(item.doc_ids))
            owners = manifest.owners(docs, path)
            owners.update((doc, self._claimed[doc]) for doc in docs
                          if doc not in owners and self._claimed.get(doc, path) != path)
            if owners:
                doc, owner = min(owners.items())
                item.error = (f"document id {doc!r} is already indexed from {owner}"
                              + (f" (and {len(owners) - 1} more)" if len(owners) > 1 else "")
                              + "; ids must be unique in an index: give the record another id, or index the file "
                                "into another index folder (index.path)")
                item.mtime_ns = -1  # not the file's fault: look again next run
            else:
                self._claimed.update(dict.fromkeys(docs, path))
        if item.error:
            # Keep whatever an earlier version of the file put in the index: nothing is lost.
            kept = prev.chunks if prev and prev.status == OK else 0
            with manifest.transaction():
                manifest.put_file(self._record(item, FAILED, reason=item.error, documents=0, chunks=kept,
                                               warnings=()))
            return FileOutcome(path, FileStatus.FAILED, reason=item.error)
        if not part.chunks:  # a file with no chunks is a single part
            ids = manifest.chunk_ids(path)
            if ids:
                self._mark_dirty(manifest)
            store.delete(sorted(ids))
            reason = "empty file" if item.size == 0 else "no text to index"
            with manifest.transaction():
                manifest.forget_chunks(ids)
                manifest.put_file(self._record(item, SKIPPED, reason=reason))
            return FileOutcome(path, FileStatus.SKIPPED, reason=reason, warnings=tuple(item.warnings),
                               notes=tuple(item.notes))
        return None

    def _write_group(self, manifest: Manifest, store: VectorStore,
                     group: list[_Part]) -> tuple[int, int, int, list[FileOutcome]]:
        """Write one group (a span per group, not per chunk or slice)."""
        if not observe.tracing():
            return self._write(manifest, store, group)
        t = self.timings
        before = (t.open, t.model, t.embed, t.write)
        with observe.span("index.group", parts=len(group), chunks=sum(len(p.chunks) for p in group)) as span:
            result = self._write(manifest, store, group)
            span.set_attributes({f"rag.{name}_seconds": round(now - then, 4) for name, now, then in
                                 zip(("open", "model", "embed", "write"), (t.open, t.model, t.embed, t.write), before)})
            span.set_attribute("rag.embedded", result[0])
        return result

    def _write(self, manifest: Manifest, store: VectorStore,
               group: list[_Part]) -> tuple[int, int, int, list[FileOutcome]]:
        t0, opened = time.perf_counter(), self.timings.open
        self._mark_dirty(manifest)
        with manifest.transaction():  # register first: the manifest knows every id the store may hold
            for part in group:
                item = part.file
                if part.first:
                    manifest.put_file(self._record(item, PENDING))
                manifest.register_chunks(item.path, ((c.chunk_id, c.doc_id) for c in part.chunks))
                item.chunk_ids.update(c.chunk_id for c in part.chunks)
        chunks = [c for part in group for c in part.chunks]
        stored = store.stored_records([c.chunk_id for c in chunks])
        todo = [c for c in chunks if stored.get(c.chunk_id, ("", ""))[0] != c.content_hash]
        # Same vector, other metadata (a record's fields, offsets after an edit above): rewrite, keep the vector.
        relabel = [c for c in chunks if c.chunk_id in stored and stored[c.chunk_id][0] == c.content_hash
                   and stored[c.chunk_id][1] != chunk_metadata(c)["record"]]
        if relabel:
            store.relabel(relabel)
        self._chunks_seen += len(chunks)
        self.progress.update("embed", advance=len(chunks) - len(todo), total=self._chunks_seen)
        self._add("write", t0, opened)
        self._embed_and_upsert(store, todo)
        # Files whose last part is in: their ids not in the new version are stale.
        t3 = time.perf_counter()
        finished = [part.file for part in group if part.last]
        stale_by_file = {item.path: sorted(manifest.chunk_ids(item.path) - item.chunk_ids) for item in finished}
        stale = [cid for ids in stale_by_file.values() for cid in ids]
        store.delete(stale)
        with manifest.transaction():
            manifest.forget_chunks(stale)
            for item in finished:
                manifest.put_file(self._record(item, OK))
        outcomes = []
        for item in finished:
            status = FileStatus.UPDATED if item.previous else FileStatus.ADDED
            outcomes.append(FileOutcome(item.path, status, item.documents, len(item.chunk_ids),
                                        warnings=tuple(item.warnings), notes=tuple(item.notes)))
            if item.warnings or item.notes:
                self.progress.note(_describe_problem(outcomes[-1]))
        self.progress.update("files", advance=len(finished))
        self.timings.write += time.perf_counter() - t3
        return len(todo), len(chunks) - len(todo), len(stale), outcomes

    def _embed_and_upsert(self, store: VectorStore, todo: list[Chunk]) -> None:
        """Embed in batches of chunks with similar token counts and upsert slice by slice.

        Every text of a batch is padded to the batch's longest, and that padding is computed
        like real tokens; sentence-transformers sorts only within one call, and by characters.
        Sorting the group by the exact token count the chunker measured and calling the model
        one batch at a time makes padding nearly nil (SciFact: 1.2x -> 1.03x the real tokens)."""
        todo = sorted(todo, key=lambda c: c.tokens, reverse=True)
        if todo and not self.embedder.loaded:  # a fake, or a model loaded before, has nothing to load
            t0 = time.perf_counter()
            with observe.span("index.model", model=self.embedder.name):
                self.embedder.warm_up()  # what embeds: the ONNX export, or torch (exporting it once)
            self.timings.model += time.perf_counter() - t0
        size = self.batch_size
        step = max(1, EMBED_SLICE // size) * size
        for i in range(0, len(todo), step):
            part = todo[i:i + step]
            t1 = time.perf_counter()
            vectors: list[list[float]] = []
            for j in range(0, len(part), size):
                vectors.extend(self.embedder.embed_documents([c.embed_text for c in part[j:j + size]]))
            t2 = time.perf_counter()
            store.upsert(part, vectors)
            self.timings.embed += t2 - t1
            self.timings.write += time.perf_counter() - t2
            self.progress.update("embed", advance=len(part))


class _Parts:
    """The parts the reader thread hands over, in order; ``ready()`` tells whether the next
    one is waiting. Leaving the ``with`` block early (an error, Ctrl-C) closes the queue, and
    the reader stops at its next hand-over."""

    def __init__(self, indexer: Indexer, todo: list[_Prepared]) -> None:
        self._indexer = indexer
        self._channel: Channel[_Part | BaseException | None] = Channel(READ_AHEAD_CHUNKS, READ_AHEAD_PARTS)
        self._todo = todo

    def ready(self) -> bool:
        return self._channel.ready()

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *_: object) -> None:
        self._channel.close()

    def __iter__(self) -> Iterator[_Part]:
        if not self._todo:
            return
        thread = threading.Thread(target=observe.carried(self._indexer._read), args=(self._todo, self._channel),
                                  name="rag-reader", daemon=True)
        thread.start()
        timings = self._indexer.timings
        try:
            while True:
                t0 = time.perf_counter()
                got = self._channel.get()
                timings.wait += time.perf_counter() - t0
                if got is None:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            self._channel.close()


def _cached_outcome(rec: FileRecord) -> FileOutcome:
    if rec.status == FAILED:
        return FileOutcome(rec.path, FileStatus.FAILED, reason=rec.reason + " (file unchanged since)")
    if rec.status == SKIPPED:
        return FileOutcome(rec.path, FileStatus.SKIPPED, reason=rec.reason)
    # What the file lost on the way in (bad JSONL records, pages without text) is still lost: the
    # same input gives the same warnings and exit code on every run, as a failed file does.
    return FileOutcome(rec.path, FileStatus.UNCHANGED, rec.documents, rec.chunks, warnings=rec.warnings)


def _under_any(path: str, root: str, roots: list[Path]) -> bool:
    for r in roots:
        rs = str(r)
        if root == rs or path == rs or path.startswith(rs.rstrip(os.sep) + os.sep):
            return True
    return False


def _describe_problem(outcome: FileOutcome) -> str:
    if outcome.status in (FileStatus.FAILED, FileStatus.SKIPPED):
        return f"{outcome.path}: skipped: {outcome.reason}"
    return f"{outcome.path}: " + "; ".join((*outcome.warnings, *outcome.notes))


def index_paths(settings: Settings, targets: Sequence[Path] = (), *, rebuild: bool = False,
                lock_timeout: float | None = None, progress: Progress | None = None,
                embedder: Embedder | None = None) -> IndexReport:
    """Index ``targets`` (or, with none, every root indexed before) into the settings' index."""
    return Indexer(settings, embedder=embedder, progress=progress).run(targets, rebuild=rebuild,
                                                                      lock_timeout=lock_timeout)
