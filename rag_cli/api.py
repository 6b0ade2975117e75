"""The library's front door: ``Index(settings)`` indexes, searches, answers and describes one index.

Everything that differs between the ways an index is used is decided here or below, never in a
caller: local folder or Chroma server (``open_index``, index_record.py), a running `rag serve` or
this process (``Index.ask``, ``Index.evaluate``), shared warm models or models of its own (the
``embedder`` and ``generators`` a warm server passes). The CLI commands, `rag serve`'s backend and
`rag eval` go through it; so can any program:

    from rag_cli.api import Index
    from rag_cli.config import load_settings

    index = Index(load_settings(Path.cwd()))
    index.index([Path("notes")])
    print(index.ask("How often should I feed my starter?").answer.answer)

Heavy parts load on first use: constructing an Index opens nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_cli.ask import Asker
    from rag_cli.config import Settings
    from rag_cli.evaluate.calibrate import Calibration
    from rag_cli.evaluate.dataset import Question
    from rag_cli.evaluate.runner import EvalReport
    from rag_cli.models import Answer, CopyReport, Hit, IndexReport, IndexStatus
    from rag_cli.progress import Progress
    from rag_cli.retrieve.filters import Filter
    from rag_cli.retrieve.search import Searcher
    from rag_cli.store.embedders import Embedder


@dataclass(frozen=True)
class Asked:
    """An answer and how it was made: by `rag serve` (its pid) or in this process."""

    answer: Answer
    served_by: int | None  # the pid of the `rag serve` that answered; None: this process
    seconds: float  # the whole call
    stages: dict[str, float] = field(default_factory=dict)  # per-stage timings, "total" included


@dataclass(frozen=True)
class Evaluated:
    """An eval run and how it ran: through `rag serve` (its pid, and why it stopped using it) or not."""

    report: EvalReport
    served_by: int | None
    fallback: str | None  # why the run went on in-process after the server stopped answering


class Index:
    """One index, as ``settings`` describe it (its folder, or its collection on a Chroma server).

    ``serve``: answer through a running `rag serve` of this index when one serves these settings
    (`serve.use`); False for the server itself. ``embedder`` is a shared warm embedding model and
    ``make_asker`` builds the Asker on the Searcher (`rag serve` keeps one embedder and one pool of
    language models across settings variants)."""

    def __init__(self, settings: Settings, *, serve: bool = True, embedder: Embedder | None = None,
                 make_asker: Callable[[Settings, Searcher], Asker] | None = None) -> None:
        self.settings = settings
        self.serve = serve
        self._embedder = embedder
        self._make_asker = make_asker
        self._searcher: Searcher | None = None
        self._asker: Asker | None = None

    # -- in this process ---------------------------------------------------------------------------
    def searcher(self) -> Searcher:
        """The in-process Searcher (opens the index: IndexNotFound, IndexMismatch, IndexCorrupt)."""
        if self._searcher is None:
            from rag_cli.retrieve.search import Searcher

            self._searcher = Searcher(self.settings, embedder=self._embedder)
        return self._searcher

    def asker(self) -> Asker:
        """The in-process Asker, on ``searcher()`` (built by ``make_asker`` when given)."""
        if self._asker is None:
            if self._make_asker is not None:
                self._asker = self._make_asker(self.settings, self.searcher())
            else:
                from rag_cli.ask import Asker

                self._asker = Asker(self.settings, searcher=self.searcher())
        return self._asker

    # -- writing -----------------------------------------------------------------------------------
    def index(self, paths: Sequence[Path] = (), *, rebuild: bool = False, lock_timeout: float | None = None,
              progress: Progress | None = None) -> IndexReport:
        """Index ``paths`` (none: every root indexed before), incrementally."""
        from rag_cli.indexer import index_paths

        self._searcher = self._asker = None  # what they opened may change
        return index_paths(self.settings, list(paths), rebuild=rebuild, lock_timeout=lock_timeout,
                           progress=progress, embedder=self._embedder)

    def copy_to(self, url: str, *, replace_other: bool = False, lock_timeout: float | None = None,
                progress: Progress | None = None) -> CopyReport:
        """Copy this (local) index to the Chroma server at ``url``."""
        from rag_cli.store.transfer import copy_index

        return copy_index(self.settings, url, replace_other=replace_other, lock_timeout=lock_timeout,
                          progress=progress)

    # -- reading -----------------------------------------------------------------------------------
    def status(self) -> IndexStatus:
        """What the index holds and how it was built (no model is loaded)."""
        from rag_cli.status import index_status

        return index_status(self.settings)

    def search(self, question: str, *, k: int | None = None, where: Filter | None = None,
               mode: str | None = None) -> list[Hit]:
        """The best ``k`` (retrieval.top_k) chunks for ``question``, in this process."""
        hits, _ = self.searcher().search(question, k or self.settings.retrieval.top_k, where, mode)
        return hits

    def ask(self, question: str, *, where: Sequence[str] = (), model: str | None = None,
            retrieve_only: bool = False, use_cache: bool | None = None,
            on_text: Callable[[str], None] | None = None, search_query: str | None = None) -> Asked:
        """A grounded answer to ``question`` (``where``: filter expressions, as `--where` takes them),
        from a running `rag serve` when one serves these settings, else in this process.
        ``search_query``: retrieve with it instead of the question (``Asker.ask``; in this process:
        the server's protocol does not carry it)."""
        options: dict[str, Any] = dict(model=model, retrieve_only=retrieve_only, use_cache=use_cache,
                                       on_text=on_text)
        if self.serve and self._asker is None and not search_query:
            from rag_cli.serve.client import ask_served

            served = ask_served(self.settings, question, where=list(where), **options)  # None: not served
            if served is not None:
                answer = served.answer
                stages = {**answer.timings, "server": answer.timings.get("total", 0.0), "total": served.seconds}
                return Asked(answer, served.pid, served.seconds, stages)
        from rag_cli.retrieve.filters import parse_where

        started = time.perf_counter()
        opened = self._asker is not None
        asker = self.asker()  # opens the index (the manifest, Chroma) the first time
        stages = {} if opened else {"open": time.perf_counter() - started}
        answer = asker.ask(question, where=parse_where(list(where)), search_query=search_query, **options)
        stages.update(answer.timings)
        return Asked(answer, None, time.perf_counter() - started, stages)

    def evaluate(self, questions: Sequence[Question], *, label: str = "", questions_file: str = "",
                 retrieval_only: bool = False, ks: Sequence[int] | None = None, progress: Progress | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> Evaluated:
        """Run ``questions`` through search (and answers, unless ``retrieval_only``) and score them:
        through a running `rag serve` when one serves these settings, else in this process."""
        from rag_cli.evaluate.runner import DEFAULT_KS, run_eval

        remote = None
        if self.serve:
            from rag_cli.serve.remote import remote_for

            remote = remote_for(self.settings, retrieval_only=retrieval_only)  # None: no `rag serve` to use
        # The remote ones answer as Searcher.search and Asker.ask do (duck-typed, as run_eval reads them).
        searcher: Any = remote[0] if remote else self.searcher()
        asker: Any = remote[1] if remote else (None if retrieval_only else self.asker())
        report = run_eval(self.settings, questions, label=label, questions_file=questions_file,
                          retrieval_only=retrieval_only, ks=tuple(ks or DEFAULT_KS), progress=progress,
                          searcher=searcher, asker=asker, on_row=on_row)
        if remote is None:
            return Evaluated(report, None, None)
        session = remote[0].session
        return Evaluated(report, session.pid, session.fallback)

    def calibrate(self, questions: Sequence[Question], *, target: float = 0.9, max_wrong: float = 0.1,
                  folds: int = 5, holdout: float = 0.0, seed: int = 0, questions_file: str = "",
                  progress: Progress | None = None) -> Calibration:
        """Tune the refusal gate (retrieval.min_score, retrieval.coverage_weight) on answerable and
        unanswerable ``questions``: each retrieved once, in this process (no language model), then
        every setting scored offline (evaluate/calibrate.py)."""
        from rag_cli.evaluate.calibrate import calibrate, measure

        evidence = measure(self.searcher(), questions, self.settings.retrieval.top_k, progress)
        return calibrate(evidence, target=target, max_wrong=max_wrong, folds=folds, holdout=holdout, seed=seed,
                         questions_file=questions_file)
