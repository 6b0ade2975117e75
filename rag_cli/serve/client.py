"""The client side of `rag serve`: find the server of an index, send one request, read the reply.

Standard library only (socket, json) besides the settings module the command has loaded anyway,
so that a served `rag ask` never imports torch, chromadb, llama_cpp or numpy. Anything short of a
served answer -- no server, `serve.use = "never"` or RAG_NO_SERVE=1, settings the server cannot
serve, a busy or starting server, a timeout, a broken connection -- is ``Unavailable``, and the
caller does the work in-process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rag_cli.config import TRUE_WORDS
from rag_cli.observe import run_id, trace_carrier
from rag_cli.serve.protocol import (
    PROTOCOL,
    encode,
    flock_held,
    lock_path,
    private_file_ok,
    read_state,
    settings_to_dict,
    state_path,
)

log = logging.getLogger(__name__)
NO_SERVE_ENV = "RAG_NO_SERVE"


class Unavailable(Exception):
    """No served answer; ``streamed`` says whether some text was already passed to on_text."""

    def __init__(self, reason: str, *, streamed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.streamed = streamed


def disabled(settings: Any) -> str | None:
    """Why requests must not go to a server (None: they may)."""
    if os.environ.get(NO_SERVE_ENV, "").strip().lower() in TRUE_WORDS:
        return f"{NO_SERVE_ENV} is set"
    if settings.serve.use == "never":
        return "serve.use = never"
    return None


@dataclass(frozen=True)
class Timeouts:
    connect: float  # to connect and get the first line (the server's "queued")
    run: float  # once the server has started on the request

    @classmethod
    def of(cls, settings: Any) -> Timeouts:
        return cls(connect=settings.serve.connect_timeout, run=settings.serve.timeout)


def exchange(state: dict[str, Any], op: str, payload: dict[str, Any], timeouts: Timeouts,
             on_text: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Send one request to the server in ``state`` and return its final line; raise Unavailable."""
    path = str(state["socket"])
    try:
        info = os.lstat(path)
    except OSError:
        raise Unavailable(f"no socket at {path}") from None
    if not stat.S_ISSOCK(info.st_mode) or not private_file_ok(info):
        raise Unavailable(f"{path} is not a socket private to this user")
    streamed = False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + timeouts.connect
        sock.settimeout(timeouts.connect)
        try:
            sock.connect(path)
            request = {"protocol": PROTOCOL, "token": state["token"], "op": op, "client_run_id": run_id(), **payload}
            trace = trace_carrier()
            if trace:
                request["trace"] = trace  # the server's request span joins this command's trace
            sock.sendall(encode(request))
        except OSError as exc:  # refused (a dead server's socket), timed out, ...
            raise Unavailable(f"cannot reach the server: {exc.strerror or exc}") from None
        buffer = b""
        while True:
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("the server did not answer in time", streamed=streamed)
                sock.settimeout(left)
                try:
                    data = sock.recv(1 << 16)
                except OSError as exc:
                    raise Unavailable(f"the connection failed: {exc.strerror or exc}", streamed=streamed) from None
                if not data:
                    raise Unavailable("the server closed the connection", streamed=streamed)
                buffer += data
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                raise Unavailable("the server sent something that is not JSON", streamed=streamed) from None
            kind = message.get("type")
            if kind == "queued":  # waiting for its turn: the server says how long it lets a request wait
                deadline = time.monotonic() + float(message.get("wait", 0)) + timeouts.connect
            elif kind == "started":
                deadline = time.monotonic() + timeouts.run
            elif kind == "text":
                if on_text is not None:
                    on_text(message["text"])
                    streamed = True
            elif kind in ("busy", "error"):
                raise Unavailable(f"{kind}: {message.get('reason') or message.get('message')}", streamed=streamed)
            else:
                return message
    finally:
        sock.close()


def locate(settings: Any) -> dict[str, Any] | None:
    """The state of a server for the settings' index folder, unless serving is off."""
    reason = disabled(settings)
    if reason:
        log.debug("rag serve not used: %s", reason)
        return None
    return read_state(settings.index_dir)


@dataclass(frozen=True)
class Served:
    answer: Any  # models.Answer
    pid: int
    seconds: float  # the whole round trip


def ask_served(settings: Any, question: str, *, where: list[str], model: str | None, retrieve_only: bool,
               use_cache: bool | None, on_text: Callable[[str], None] | None = None) -> Served | None:
    """`Asker.ask` through the running server, or None when the caller must answer in-process
    (on a failure after text was streamed, a line break ends the partial text first)."""
    state = locate(settings)
    if state is None:
        return None
    started = time.perf_counter()
    payload = {"settings": settings_to_dict(settings), "question": question, "where": list(where), "model": model,
               "retrieve_only": retrieve_only, "use_cache": use_cache, "stream": on_text is not None}
    try:
        message = exchange(state, "ask", payload, Timeouts.of(settings), on_text)
    except Unavailable as exc:
        log.info("rag serve not used (%s); answering in-process", exc.reason)
        if exc.streamed and on_text is not None:
            on_text("\n")
        return None
    from rag_cli.models import Answer

    return Served(Answer.from_dict(message["answer"]), int(state["pid"]), time.perf_counter() - started)


# -- status and stop ------------------------------------------------------------------------------

class ServeState(StrEnum):
    """Where the server of an index is (``rag serve --status``'s ``state``)."""

    READY = "ready"  # answering
    STARTING = "starting"  # listening, loading models
    NOT_RUNNING = "not running"
    STALE = "stale"  # a state file left by a server that is gone
    UNRESPONSIVE = "unresponsive"  # alive (it holds the lock) but not answering


@dataclass(frozen=True)
class ServeStatus:
    """``state``: ready (answering), starting (listening, loading models), not running, stale
    (a state file left by a server that is gone) or unresponsive (alive but not answering)."""

    state: ServeState
    index_dir: str
    pid: int | None = None
    socket: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # what the server says about itself

    SCHEMA = "rag-cli/serve-status/v1"

    @property
    def live(self) -> bool:
        return self.state in (ServeState.READY, ServeState.STARTING)

    @property
    def ready(self) -> bool:
        return self.state == ServeState.READY

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "state": str(self.state), "live": self.live, "ready": self.ready,
                "index_dir": self.index_dir, "pid": self.pid, "socket": self.socket, **self.details}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(settings: Any) -> ServeStatus:
    """Liveness and readiness of the server of the settings' index (whatever serve.use says)."""
    index_dir = settings.index_dir
    state = read_state(index_dir)
    if state is None:
        return ServeStatus(ServeState.NOT_RUNNING, str(index_dir))
    pid, sock = int(state["pid"]), str(state["socket"])
    try:
        reply = exchange(state, "status", {}, Timeouts(connect=max(1.0, settings.serve.connect_timeout), run=1.0))
    except Unavailable as exc:
        gone = ServeState.STALE if not _alive(pid) or not _lock_held(index_dir) else ServeState.UNRESPONSIVE
        return ServeStatus(gone, str(index_dir), pid, sock, {"reason": exc.reason})
    details = {k: v for k, v in reply.items() if k not in ("type", "pid", "socket", "index_dir", "ready")}
    serve_state = ServeState.READY if reply.get("ready") else ServeState.STARTING
    return ServeStatus(serve_state, str(index_dir), pid, sock, details)


def _lock_held(index_dir: Path) -> bool:
    """Whether a server holds the index's serve lock (the kernel frees it when the server dies)."""
    return flock_held(lock_path(index_dir))


def stop(settings: Any, wait: float = 30.0) -> ServeStatus:
    """Ask the server to stop (it finishes the request it is on, refuses the waiting ones, removes
    its socket and state file) and wait up to ``wait`` seconds for it to exit; SIGTERM when it
    does not answer; a stale state file is removed. Returns the status afterwards, with the
    state before in ``details["was"]`` (and the pid in ``details["pid_was"]``)."""
    before = status(settings)
    index_dir = settings.index_dir
    if before.state == ServeState.STALE:
        _remove_stale(index_dir, before.socket)
    elif before.state != ServeState.NOT_RUNNING:
        _stop_live(before, index_dir, wait)
    after = status(settings)
    return ServeStatus(after.state, after.index_dir, after.pid, after.socket,
                       {**after.details, "was": str(before.state), "pid_was": before.pid})


def _stop_live(before: ServeStatus, index_dir: Path, wait: float) -> None:
    assert before.pid is not None
    if before.live:
        try:
            exchange(read_state(index_dir) or {}, "stop", {}, Timeouts(connect=2.0, run=2.0))
        except (Unavailable, KeyError):
            os.kill(before.pid, signal.SIGTERM)
    else:  # alive (it holds the lock) but not answering
        os.kill(before.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _alive(before.pid) and _lock_held(index_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def _remove_stale(index_dir: Path, sock: str | None) -> None:
    """Remove a dead server's files, holding its lock so that a server starting now is not hurt."""
    fd = os.open(lock_path(index_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # a server holds it after all
        for path in (state_path(index_dir), Path(sock) if sock else None):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    finally:
        os.close(fd)
