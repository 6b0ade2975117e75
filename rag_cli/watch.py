"""Keeping an index in step with its folders: `rag index --watch` and `rag serve --watch`.

A ``Watcher`` listens to file system events on the indexed roots (``watchfiles``: inotify on
Linux), keeps the ones the walker would take (supported suffix, no hidden part, not in the index
folder, index.include/exclude), waits until the changes have been quiet for ``debounce`` seconds
(at most ``max_wait`` after the first one), and then runs the ordinary incremental ``Indexer`` once
over the roots the batch touched. That run compares sizes and mtimes, reads only what changed,
embeds only chunks whose text changed and removes what is gone: the same pipeline and the same
guarantees as `rag index` (a file that turns bad keeps its old chunks, with a warning; a run
stopped at any point leaves a consistent index). Roots, not single files, are re-indexed because
a document's id is its path relative to its root.

The index write lock is held only while a batch runs (``Indexer.run`` takes it); while waiting for
events nothing is held, so other `rag index` and `rag ask` runs go on. A batch that finds the lock
taken by another `rag index` is kept and tried again.

Editors that save through a temporary file and a rename (vim's backup, VS Code, atomic writers)
produce a few events on the file and on names the walker ignores (``.x.swp``, ``x.md~``); after
the debounce, one run sees the new file. A watched folder that is deleted or renamed (missing for
``gone_after`` seconds) is dropped with a warning, its chunks kept, as `rag index` keeps the files
of a root that is missing; the others are still watched, and with none left ``run`` returns.

``events`` (the event source) and ``clock`` are injectable, so the batching is tested without real
file system events; the default source is ``watchfiles_events``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_cli.config import Settings
from rag_cli.errors import IndexBusy
from rag_cli.index_dir import IndexPaths
from rag_cli.ingest.walk import wanted, wanted_folder
from rag_cli.models import FileOutcome, FileStatus, IndexReport
from rag_cli.progress import Progress

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "added", "modified", "deleted"
Change = tuple[str, str]  # (ADDED | MODIFIED | DELETED, absolute path)
# (folders to watch, stop) -> sets of changes; an empty set now and then (a tick) lets the watcher
# look at its clock, its file roots and its stop flag.
EventSource = Callable[[Sequence[Path], threading.Event], Iterable[set[Change]]]

TICK = 0.2  # seconds between ticks of the default source while nothing happens


def watchfiles_events(folders: Sequence[Path], stop: threading.Event, *, tick: float = TICK) -> Iterator[set[Change]]:
    """Changes under ``folders`` from ``watchfiles`` (inotify), and an empty set every ``tick``
    seconds; ends when ``stop`` is set. With no folders (file roots only): ticks."""
    if not folders:
        while not stop.wait(tick):
            yield set()
        return
    from watchfiles import watch

    # step: a group ends after 50 ms without events (our own debounce comes after); the Rust side
    # sleeps between steps with the GIL released, so an idle watcher costs almost nothing.
    for changes in watch(*folders, watch_filter=None, debounce=1_600, step=50, stop_event=stop,
                         rust_timeout=int(tick * 1000), yield_on_timeout=True, raise_interrupt=False):
        yield {(change.name, path) for change, path in changes}


@dataclass(frozen=True)
class WatchBatch:
    """One batch: the changes seen, and the Indexer run over the roots they touched."""

    number: int  # 1, 2, ... (0: a first pass over every root)
    changes: int  # the file system events it gathered (after filtering)
    roots: tuple[str, ...]
    report: IndexReport
    seconds: float

    def count(self, status: FileStatus) -> int:
        return self.report.count(status)

    @property
    def problems(self) -> tuple[FileOutcome, ...]:
        return self.report.problems

    def summary(self) -> str:
        """One plain line: what changed and how long it took."""
        counts = ", ".join(f"{self.count(s)} {s.value}" for s in (FileStatus.ADDED, FileStatus.UPDATED,
                                                                   FileStatus.REMOVED, FileStatus.FAILED))
        r = self.report
        return (f"batch {self.number}: {counts}; {r.chunks_written} chunks embedded, {r.chunks_deleted} deleted, "
                f"{r.chunks_total} in the index; {self.seconds:.2f} s")

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"schema": "rag-cli/watch-batch/v1", "batch": self.number, "changes": self.changes,
                "roots": list(self.roots), "files": {s.value: self.count(s) for s in FileStatus},
                "chunks": {"written": r.chunks_written, "reused": r.chunks_reused, "deleted": r.chunks_deleted,
                           "total": r.chunks_total},
                "problems": [{"path": f.path, "status": f.status.value, "reason": f.reason,
                              "warnings": list(f.warnings)} for f in self.problems],
                "seconds": round(self.seconds, 3)}


@dataclass
class _Root:
    path: Path
    is_file: bool
    signature: tuple[int, int] | None = None  # a file root's (size, mtime_ns), looked at every tick
    missing_since: float | None = None


@dataclass
class _Pending:
    changes: dict[str, str] = field(default_factory=dict)  # path -> last kind of change
    roots: set[Path] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0


class Watcher:
    """Watches ``roots`` (None: every root the index holds) and re-indexes them as they change.

    ``run(stop)`` watches in the calling thread until ``stop`` is set (or nothing is left to
    watch) and returns why it stopped; ``start()``/``stop()`` do the same on a thread of its own
    (a warm server: pass its ``embedder``, and its ``guard``, a lock held around each batch so that
    no request is answered from a half-open store). ``on_batch`` gets each ``WatchBatch``,
    ``on_warning`` each warning (a folder gone, a busy index, a file that failed), ``progress``
    the Indexer's progress."""

    def __init__(self, settings: Settings, roots: Sequence[Path] | None = None, *, embedder: Any = None,
                 on_batch: Callable[[WatchBatch], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, progress: Progress | None = None,
                 events: EventSource | None = None, clock: Callable[[], float] = time.monotonic,
                 debounce: float = 0.2, max_wait: float = 5.0, gone_after: float = 1.0, retry_after: float = 2.0,
                 lock_timeout: float = 0.0, initial_pass: bool = False,
                 guard: threading.Lock | None = None) -> None:
        self.settings = settings
        self.index_root = Path(os.path.abspath(settings.index_dir))
        self._given = [Path(os.path.abspath(r)) for r in roots] if roots else None
        self.embedder = embedder
        self.on_batch = on_batch or (lambda batch: log.info("%s", batch.summary()))
        self.on_warning = on_warning or (lambda text: log.warning("%s", text))
        self.progress = progress
        self.events: EventSource = events or watchfiles_events
        self.clock = clock
        self.debounce, self.max_wait, self.gone_after, self.retry_after = debounce, max_wait, gone_after, retry_after
        self.lock_timeout = lock_timeout
        self.initial_pass = initial_pass
        self.guard = guard
        self.batches = 0  # batches run (the first pass not counted)
        self.stop_reason = ""
        self._indexed: set[str] = set()  # paths the index holds (a deleted folder is known by them)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the first pass ---------------------------------------------------------------------------
    def index_all(self, *, rebuild: bool = False, lock_timeout: float | None = None,
                  progress: Progress | None = None) -> IndexReport:
        """The ordinary `rag index` run over the roots (none given: every root indexed before);
        its embedder stays loaded for the batches."""
        from rag_cli.indexer import Indexer

        indexer = Indexer(self.settings, embedder=self.embedder, progress=progress or self.progress)
        self.embedder = indexer.embedder
        return indexer.run(self._given or (), rebuild=rebuild, lock_timeout=lock_timeout)

    # -- on a thread ------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """``run`` on a daemon thread; ``stop()`` ends it."""
        self._stop.clear()

        def target() -> None:
            try:
                self.run(self._stop)
            except Exception as exc:  # a RagError (the index was rebuilt with other settings, ...) or a bug
                log.debug("the watcher stopped", exc_info=True)
                self.stop_reason = f"failed: {getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}"
                self.on_warning(f"watching stopped: {self.stop_reason}")

        self._thread = threading.Thread(target=target, name="rag-watch", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread, letting a batch being written finish (up to ``timeout`` seconds; a batch
        cut short is safe: the next run completes it). True when it has stopped."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- watching ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> str:
        """Watch until ``stop`` is set or no root is left; return why it stopped."""
        stop = stop or self._stop
        roots = [_Root(p, p.is_file()) for p in self._resolve_roots()]
        for r in roots:
            r.signature = _signature(r.path) if r.is_file else None
        self._refresh_indexed()
        if self.initial_pass:
            self._batch(0, [r.path for r in roots if r.path.exists()], 0)
        pending = _Pending()
        while not stop.is_set() and roots:
            folders = [r.path for r in roots if not r.is_file and r.path.is_dir()]
            restart = False
            source = iter(self.events(folders, stop))
            try:
                for changes in source:
                    now = self.clock()
                    self._gather(changes, roots, pending, now)
                    gone = self._gone(roots, now)
                    if gone:
                        for r in gone:
                            roots.remove(r)
                            self.on_warning(f"{r.path} is gone (deleted or renamed): no longer watched; its chunks "
                                            f"stay in the index (`rag index` on its new place indexes it there)")
                        pending.roots -= {r.path for r in gone}
                        restart = True  # watches of a renamed folder follow it under its new name: start afresh
                    if pending.roots and (now - pending.last >= self.debounce or now - pending.first >= self.max_wait):
                        if not self._run_pending(pending, now):
                            pending.first = pending.last = now + self.retry_after - self.debounce  # try again later
                    if stop.is_set() or restart:
                        break
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            if not restart and not stop.is_set():
                break  # the source ended by itself
        if pending.roots:
            log.info("stopping with %d change(s) not indexed: the next `rag index` takes them", len(pending.changes))
        self.stop_reason = "stopped" if stop.is_set() else "nothing left to watch" if not roots else "events ended"
        return self.stop_reason

    def _resolve_roots(self) -> list[Path]:
        if self._given:
            return list(self._given)
        paths = IndexPaths(self.settings.index_dir)
        manifest = paths.open_manifest()
        try:
            return [Path(r) for r in manifest.roots()]
        finally:
            manifest.close()

    def _refresh_indexed(self) -> None:
        paths = IndexPaths(self.settings.index_dir)
        if not paths.exists():
            self._indexed = set()
            return
        manifest = paths.open_manifest()
        try:
            self._indexed = set(manifest.files())
        finally:
            manifest.close()

    def _gather(self, changes: set[Change], roots: list[_Root], pending: _Pending, now: float) -> None:
        for kind, path in changes:
            root = self.affected_root(kind, path, roots)
            if root is not None:
                pending.changes[path] = kind
                self._touch(pending, root, now)
        for r in roots:  # file roots: a rename over them replaces the inode, so look at them instead
            if r.is_file:
                sig = _signature(r.path)
                if sig is not None and sig != r.signature:
                    r.signature = sig
                    pending.changes[str(r.path)] = MODIFIED
                    self._touch(pending, r.path, now)

    @staticmethod
    def _touch(pending: _Pending, root: Path, now: float) -> None:
        if not pending.roots:
            pending.first = now
        pending.roots.add(root)
        pending.last = now

    def affected_root(self, kind: str, path: str, roots: Sequence[_Root]) -> Path | None:
        """The root whose index a change of ``path`` may change, or None (the walker would not take
        it: hidden, excluded, unsupported, in the index folder)."""
        p = os.path.abspath(path)
        if p == str(self.index_root) or p.startswith(str(self.index_root) + os.sep):
            return None
        index = self.settings.index
        for r in roots:
            rs = str(r.path)
            if r.is_file:
                if p == rs:
                    return r.path
                continue
            if not p.startswith(rs.rstrip(os.sep) + os.sep):
                continue
            rel = os.path.relpath(p, rs).replace(os.sep, "/")
            if wanted(rel, include=index.include, exclude=index.exclude):
                return r.path
            if kind == DELETED:  # a folder that held indexed files (moved away or deleted whole)?
                prefix = p + os.sep
                if wanted_folder(rel, exclude=index.exclude) and any(f.startswith(prefix) for f in self._indexed):
                    return r.path
            elif os.path.isdir(p) and wanted_folder(rel, exclude=index.exclude):
                return r.path  # a folder moved in: its files bring no events of their own
            return None
        return None

    def _gone(self, roots: list[_Root], now: float) -> list[_Root]:
        gone = []
        for r in roots:
            if r.path.exists():
                r.missing_since = None
            elif r.missing_since is None:
                r.missing_since = now  # an editor's rename dance on a file root lasts milliseconds
            elif now - r.missing_since >= self.gone_after:
                gone.append(r)
        return gone

    def _run_pending(self, pending: _Pending, now: float) -> bool:
        """Index the pending roots that exist; False when the index is busy (kept for later)."""
        targets = sorted(r for r in pending.roots if r.exists())
        if targets:
            try:
                self._batch(self.batches + 1, targets, len(pending.changes))
            except IndexBusy:
                self.on_warning("another `rag index` is writing to the index: trying again in "
                                f"{self.retry_after:.0f} s")
                return False
            self.batches += 1
        pending.changes.clear()
        pending.roots.clear()
        return True

    def _batch(self, number: int, targets: list[Path], changes: int) -> WatchBatch:
        from rag_cli.indexer import Indexer

        started = self.clock()
        with self.guard if self.guard is not None else nullcontext():
            indexer = Indexer(self.settings, embedder=self.embedder, progress=self.progress)
            self.embedder = indexer.embedder  # the model loads once, on the first batch that embeds
            report = indexer.run(targets, lock_timeout=self.lock_timeout)
        batch = WatchBatch(number, changes, tuple(str(t) for t in targets), report, self.clock() - started)
        self._refresh_indexed()
        for f in batch.problems:
            if f.status is FileStatus.UNCHANGED or f.reason.endswith("(file unchanged since)"):
                continue  # told before, when it changed
            reason = f.reason if f.status is FileStatus.FAILED else "; ".join(f.warnings)
            self.on_warning(f"{f.path}: {reason}" + (" (its earlier chunks are kept)" if f.status is FileStatus.FAILED
                                                     else ""))
        self.on_batch(batch)
        return batch


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def watch_beside(settings: Settings, *, embedder: Any, guard: threading.Lock, on_event: Callable[[str], None],
                 on_warning: Callable[[str], None]) -> Watcher:
    """The watcher of a warm process (`rag serve --watch`, `rag mcp --watch`), started on its
    thread: a catch-up pass, then a batch per burst of changes, each holding ``guard`` (the lock
    the process holds around its work: no request is answered from a half-written batch), with the
    process's warm embedding model (its query cache left out). The next request sees the new
    stamp and reopens the index."""
    watcher = Watcher(settings, embedder=getattr(embedder, "inner", embedder), guard=guard, initial_pass=True,
                      on_batch=lambda batch: on_event(f"indexed {batch.summary()}"), on_warning=on_warning)
    watcher.start()
    on_event("watching the indexed folders for changes")
    return watcher


def stop_beside(watcher: Watcher, timeout: float) -> None:
    """Stop a warm process's watcher, letting the batch being written finish (up to ``timeout`` s)."""
    if not watcher.stop(timeout):
        log.warning("the watcher's batch did not finish in time; the next `rag index` completes it")
