"""A circuit breaker for the language-model server, shared by every rag process through a file.

After ``failures`` failed requests in a row the breaker *opens*: for ``cooldown`` seconds every
call fails at once, without touching the network, so consecutive `rag ask` processes (or the
questions of a `rag eval` run) skip a dead server instead of each waiting for its timeouts.
After the cooldown it is *half-open*: one trial call is let through (the process taking it
marks the trial in the file, so that other processes keep skipping while it runs); a success
closes the breaker, a failure opens it again for another cooldown. (The trial belongs to the
process that took it: its own next calls, e.g. the answer after the warm-up probe, go through.)

The state is a small JSON file under ``cache_root()/breakers/``, named by a hash of the URL and
written atomically (temporary file + rename). Losing a race between two processes loses at most
a count, never the file; a file that cannot be read or written only makes the breaker forget,
it never makes a call fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from rag_cli.fileio import write_json_atomically
from rag_cli.model_files import cache_root

log = logging.getLogger(__name__)

class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail at once until the cooldown ends
    HALF_OPEN = "half-open"  # one trial call goes through


CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def breaker_path(key: str) -> Path:
    return cache_root() / "breakers" / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.json"


class CircuitBreaker:
    """Consecutive failures of one server (``key``: its URL), persisted in ``path``.

    ``failures`` = 0 turns the breaker off (every call is let through, nothing is written).
    ``trial_window`` is how long a half-open trial call may take before another process may
    try one too (a process killed during its trial must not keep the server skipped forever).
    """

    def __init__(self, key: str, *, failures: int, cooldown: float, trial_window: float,
                 path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.threshold = failures
        self.cooldown = cooldown
        self.trial_window = trial_window
        self.path = path or breaker_path(key)
        self.clock = clock

    # -- the file ------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        state = {"failures": 0, "open_until": 0.0, "trial_until": 0.0, "trial_owner": 0}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("key") == self.key:  # a hash collision or a foreign file is ignored
                state.update({k: data[k] for k in state if isinstance(data.get(k), (int, float))})
        except (OSError, ValueError, AttributeError):
            pass
        return state

    def _write(self, state: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.path, {"key": self.key, **state, "written": self.clock()})
        except OSError as exc:  # a read-only cache: the breaker forgets, the call is unaffected
            log.debug("cannot write the circuit breaker file %s: %s", self.path, exc)

    # -- the rule ------------------------------------------------------------------------------------
    def state(self) -> BreakerState:
        if self.threshold <= 0:
            return CLOSED
        s = self._read()
        if s["failures"] < self.threshold:
            return CLOSED
        return OPEN if s["open_until"] > self.clock() else HALF_OPEN

    def admit(self) -> float | None:
        """Let a call through (None), or say for how many more seconds the server is skipped."""
        if self.threshold <= 0:
            return None
        s = self._read()
        if s["failures"] < self.threshold:
            return None
        now = self.clock()
        if s["open_until"] > now:
            return s["open_until"] - now
        if s["trial_until"] > now:
            if s["trial_owner"] == os.getpid():  # this process's trial goes on
                return None
            return s["trial_until"] - now  # another process is making the trial call
        s["trial_until"], s["trial_owner"] = now + self.trial_window, os.getpid()
        self._write(s)
        log.info("circuit breaker for %s half-open: one trial request", self.key)
        return None

    def success(self) -> None:
        if self.threshold <= 0:
            return
        s = self._read()
        if s["failures"]:
            if s["failures"] >= self.threshold:
                log.info("circuit breaker for %s closed: the server answered", self.key)
            self._write({"failures": 0, "open_until": 0.0, "trial_until": 0.0, "trial_owner": 0})

    def failure(self, reason: str) -> None:
        if self.threshold <= 0:
            return
        s = self._read()
        s["failures"] += 1
        s["trial_until"], s["trial_owner"] = 0.0, 0
        if s["failures"] >= self.threshold:
            s["open_until"] = self.clock() + self.cooldown
            log.info("circuit breaker for %s open after %d failed request(s) in a row (%s): skipping it "
                        "for %.0f s", self.key, s["failures"], reason, self.cooldown)
        else:
            log.info("%s: failed request %d of %d before the circuit breaker opens (%s)", self.key,
                     s["failures"], self.threshold, reason)
        self._write(s)
