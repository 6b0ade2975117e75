"""The answer cache: the answers `rag ask` gave, in the index folder (``answers.sqlite3``), by a key
of the question, the filter, every setting that shapes an answer and the index state.

Any change of the index state (a reindex that changed something) drops the answers of the old
state when the next one is stored; how ``llm.url`` is reached (``TRANSPORT_KEYS``) is not part of
the key, so changing a timeout keeps them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from rag_cli.config import Settings
from rag_cli.models import Answer

ANSWER_CACHE = "answers.sqlite3"  # in the index folder

# Bumped when the way answers are made changes (a cached answer of an older rag-cli is not reused):
# 2 = "bundled" became Gemma 3 270M, with narrowing, snapping and the evidence refusal; 3 = answers
# carry quoted evidence (Answer.evidence).
ANSWER_LOGIC = 3

# How llm.url is reached, not what it answers: changing these keeps the cached answers.
TRANSPORT_KEYS = frozenset({"api_key_env", "connect_timeout", "timeout", "retries", "breaker_failures",
                            "breaker_cooldown"})
# ask.* settings that do not shape an answer: the cache itself and the query log.
NOT_ANSWER_KEYS = frozenset({"cache", "log", "log_max_mb"})


class ResolvedFilter(Protocol):
    """What the key needs of a filter (``retrieve.filters.Filter``): what it means, with relative
    dates already turned into instants."""

    def resolved(self) -> tuple[Any, ...]: ...


class AnswerCache:
    """Answers by a key of the question, the answer-affecting settings and the index state."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, index_state TEXT NOT NULL, "
                         "answer TEXT NOT NULL, created REAL NOT NULL)")

    @classmethod
    def in_index(cls, root: Path) -> AnswerCache:
        """The cache of the index folder ``root``."""
        return cls(root / ANSWER_CACHE)

    def get(self, key: str) -> Answer | None:
        row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return Answer.from_dict(json.loads(row[0])) if row else None

    def put(self, key: str, index_state: str, answer: Answer) -> None:
        self._db.execute("DELETE FROM answers WHERE index_state != ?", (index_state,))  # stale: index changed
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                         (key, index_state, json.dumps(answer.to_dict()), time.time()))

    def close(self) -> None:
        self._db.close()


def cache_key(settings: Settings, question: str, where: ResolvedFilter | None, index_state: str,
              model: str | None = None, *, search_query: str | None = None) -> str:
    """The key of an answer: the question (stripped), the filter, the index state, the settings that
    shape an answer (``NOT_ANSWER_KEYS`` and ``TRANSPORT_KEYS`` left out), ``ANSWER_LOGIC`` and the
    ``--model`` given, if any; and the search query when it is not the question (`rag chat`'s
    follow-ups; a plain question keeps the key it always had)."""
    llm = {k: v for k, v in asdict(settings.llm).items() if k not in TRANSPORT_KEYS}
    material = {
        "question": question.strip(), "where": repr(where.resolved()) if where else "", "index": index_state,
        "retrieval": asdict(settings.retrieval), "llm": llm, "prompt": asdict(settings.prompt),
        "embedding": asdict(settings.embedding), "logic": ANSWER_LOGIC,
        "ask": {k: v for k, v in asdict(settings.ask).items() if k not in NOT_ANSWER_KEYS},
    }
    if search_query is not None and search_query.strip() != question.strip():
        material["search"] = search_query.strip()
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest() + (model or "")
