"""A Searcher and an Asker that go through `rag serve`, for `rag eval`'s runner.

They answer like the in-process ones of an eval run (no `where`), so a served report equals an
in-process one apart from timings. If the server stops answering mid-run (stopped, busy, timed
out), the rest of the run goes in-process: the models load then, and ``RemoteSession.fallback``
says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rag_cli.config import Settings
from rag_cli.models import Answer, Hit
from rag_cli.serve.client import Timeouts, Unavailable, exchange, locate
from rag_cli.serve.protocol import settings_to_dict

log = logging.getLogger(__name__)


class RemoteSession:
    """One eval configuration's connection details and its in-process stand-ins."""

    def __init__(self, settings: Settings, state: dict[str, Any]) -> None:
        self.settings = settings
        self.state = state
        self.pid = int(state["pid"])
        self.served = 0
        self.fallback: str | None = None
        self._payload = settings_to_dict(settings)
        self._searcher: Any = None
        self._asker: Any = None

    def call(self, op: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if self.fallback is not None:
            return None
        try:
            reply = exchange(self.state, op, {"settings": self._payload, **payload},
                             Timeouts.of(self.settings))
        except Unavailable as exc:
            self.fallback = exc.reason
            log.warning("rag serve stopped answering (%s); going on in-process", exc.reason)
            return None
        self.served += 1
        return reply

    def local_searcher(self) -> Any:
        if self._searcher is None:
            from rag_cli.retrieve.search import Searcher

            self._searcher = Searcher(self.settings)
            self._searcher.embedder.warm_up()  # as run_eval warms its own
        return self._searcher

    def local_asker(self) -> Any:
        if self._asker is None:
            from rag_cli.ask import Asker

            self._asker = Asker(self.settings, searcher=self.local_searcher())
        return self._asker


class RemoteSearcher:
    """``Searcher.search`` through the server."""

    embedder = None  # nothing to warm up here: the server's model is loaded

    def __init__(self, session: RemoteSession) -> None:
        self.session = session

    def search(self, question: str, k: int, where: Any = None,
               mode: str | None = None) -> tuple[list[Any], dict[str, float]]:
        reply = None
        if where is None and mode is None:
            reply = self.session.call("search", {"question": question, "k": k, "where": None})
        if reply is None:
            return self.session.local_searcher().search(question, k, where, mode)
        return [Hit(**h) for h in reply["hits"]], dict(reply["timings"])


class _RemoteGenerator:
    def __init__(self, session: RemoteSession, model: str) -> None:
        self.session, self.model = session, model

    def warm_up(self) -> None:
        if self.session.call("warm", {"model": self.model}) is None:
            self.session.local_asker().generator(self.model).warm_up()


class RemoteAsker:
    """``Asker.ask`` through the server."""

    def __init__(self, session: RemoteSession) -> None:
        self.session = session

    def generator(self, model: str) -> _RemoteGenerator:
        return _RemoteGenerator(self.session, model)

    def ask(self, question: str, *, where: Any = None, model: str | None = None, retrieve_only: bool = False,
            use_cache: bool | None = None, on_text: Callable[[str], None] | None = None, log: bool = True) -> Answer:
        reply = None
        if where is None and on_text is None:
            reply = self.session.call("ask", {"question": question, "where": None, "model": model,
                                              "retrieve_only": retrieve_only, "use_cache": use_cache, "log": log})
        if reply is None:
            return self.session.local_asker().ask(question, where=where, model=model, retrieve_only=retrieve_only,
                                                  use_cache=use_cache, on_text=on_text, log=log)
        return Answer.from_dict(reply["answer"])


def remote_for(settings: Settings, *, retrieval_only: bool) -> tuple[RemoteSearcher, RemoteAsker | None] | None:
    """A searcher and (unless retrieval-only) an asker through the running server when it serves
    these settings, else None (the run goes in-process)."""
    state = locate(settings)
    if state is None:
        return None
    session = RemoteSession(settings, state)
    if session.call("warm", {"model": None}) is None:  # not running, busy, or other settings
        log.info("rag serve not used for this run: %s", session.fallback)
        return None
    return RemoteSearcher(session), None if retrieval_only else RemoteAsker(session)
