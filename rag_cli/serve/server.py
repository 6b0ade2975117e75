"""`rag serve`: one process keeps the models and the index open and answers `rag ask` and
`rag eval` over a Unix socket (see protocol.py for the files and the wire format).

Threads: the *acceptor* takes connections (checking the peer is this user) and gives each to a
short-lived *handler*, which reads one request, checks its token, answers control requests
(ping, status, stop) at once and puts work on the queue; one *worker* answers the work in
order (the models are not thread-safe, and on a few cores two generations at once are not
faster than one after the other). The main thread loads the models and waits for a stop.

Back-pressure: at most ``serve.queue_size`` requests wait while one is answered; one more is
told ``busy`` at once, and so is a request that waited longer than ``serve.wait_timeout``.
A client told busy works in-process, so a crowded server slows nobody down by more than the
wait. Stopping (SIGTERM, SIGINT, `rag serve --stop`) removes the socket and state file first
(new clients work in-process), lets the request being answered finish, tells the waiting ones
busy, and exits 0.
"""

from __future__ import annotations

import errno
import fcntl
import hmac
import json
import logging
import os
import queue
import secrets
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag_cli import observe
from rag_cli.config import Settings
from rag_cli.errors import ConfigError, IndexBusy, RagError
from rag_cli.index_record import prepare_folder
from rag_cli.serve.protocol import (
    MAX_REQUEST,
    PROTOCOL,
    encode,
    lock_path,
    read_state,
    settings_from_dict,
    socket_path,
    state_path,
    write_state,
)

if TYPE_CHECKING:
    from rag_cli.watch import Watcher

log = logging.getLogger(__name__)
WORK = ("ask", "search", "warm")
READ_TIMEOUT = 10.0  # for a client to send its request line, and for each write to a client


class ClientGone(Exception):
    """The client closed its end (it timed out and works in-process)."""


@dataclass
class Job:
    request: dict[str, Any]
    conn: socket.socket
    enqueued: float = field(default_factory=time.monotonic)
    state: str = "waiting"  # -> "running" (the worker took it) or "dropped" (it waited too long)
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(encode(message))
    except OSError:
        raise ClientGone() from None


def _read_line(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(1 << 16)
        if not chunk or len(data) + len(chunk) > MAX_REQUEST:
            return None
        data += chunk
    return data.split(b"\n", 1)[0]


def _peer_uid(conn: socket.socket) -> int:
    if not hasattr(socket, "SO_PEERCRED"):
        return os.getuid()  # the socket's 0600 mode and the token still hold
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


class Server:
    """A server for ``settings``' index. ``open`` (listen), ``start`` (threads), ``load`` (models;
    then ready), ``close``. ``backend`` may be given (tests give one with fakes)."""

    def __init__(self, settings: Settings, backend: Any = None, *, llm: bool = True,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.llm = llm
        self.on_event = on_event or (lambda text: log.info("%s", text))
        self.index_dir = settings.index_dir
        self.queue_size = settings.serve.queue_size
        self.wait_timeout = settings.serve.wait_timeout
        self.token = secrets.token_urlsafe(32)
        self.socket_path: Any = None  # set by open()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.counts = {"served": 0, "busy": 0, "refused": 0, "failed": 0}
        self.started = time.time()
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._pending = 0  # admitted and not finished: waiting + the one being answered
        self._lock = threading.Lock()
        self._handlers = threading.BoundedSemaphore(self.queue_size + 8)
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._threads: list[threading.Thread] = []
        self._settings_cache: dict[str, Settings] = {}
        self._loading = False
        self._opened = False
        self.stop_reason = ""
        self.last_active = time.monotonic()  # the last work request taken or finished (--idle-timeout)
        self.work_lock = threading.Lock()  # held by the worker per request, and by a watcher per batch

    # -- life cycle ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Take the index's serve lock, clear a dead server's files, listen, write the state file.
        From here on `ping` and `status` are answered."""
        prepare_folder(self.settings)  # IndexNotFound without an index (a server index: its caches' folder)
        fd = os.open(lock_path(self.index_dir), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            other = (read_state(self.index_dir) or {}).get("pid", "?")
            raise IndexBusy(f"another `rag serve` (pid {other}) serves {self.index_dir}",
                            hint="`rag serve --status` describes it; `rag serve --stop` stops it") from None
        self._lock_fd = fd
        try:
            self._listen()
        except BaseException:
            self._release()
            raise

    def _listen(self) -> None:
        try:
            path = socket_path(self.index_dir)
        except PermissionError as exc:
            raise ConfigError(f"no private folder for the socket: {exc}",
                              hint="use a shorter index path (index.path), or set XDG_RUNTIME_DIR") from None
        self.socket_path = path
        stale = read_state(self.index_dir)  # we hold the lock: any state file is a dead server's
        for old in {str(path), str(stale["socket"]) if stale else ""} - {""}:
            try:
                if os.lstat(old).st_uid == os.getuid():
                    os.unlink(old)
            except FileNotFoundError:
                pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket is created 0600: no moment where others could connect
        try:
            listener.bind(str(path))
        finally:
            os.umask(umask)
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.settimeout(0.2)  # the acceptor looks at the stop flag this often
        self._listener = listener
        self._opened = True
        write_state(self.index_dir, {"pid": os.getpid(), "socket": str(path), "token": self.token,
                                     "index_dir": str(self.index_dir), "started": self.started,
                                     "protocol": PROTOCOL})

    def start(self) -> None:
        for name, target in (("serve-accept", self._accept_loop), ("serve-worker", self._work_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def load(self) -> None:
        """Load the models and open the index; then requests are served."""
        started = time.perf_counter()
        self._loading = True
        try:
            with observe.span("serve.load", llm=self.llm):
                if self.backend is None:
                    from rag_cli.serve.backend import Backend

                    self.backend = Backend(self.settings)
                self.backend.load(llm=self.llm)
        finally:
            self._loading = False
        self.ready.set()
        self.on_event(f"ready in {time.perf_counter() - started:.1f} s")

    def request_stop(self, why: str) -> None:
        """Stop taking requests: the socket and the state file go at once. Safe in a signal
        handler (no output here: ``close`` says why it stopped)."""
        if self.stopping.is_set():
            return
        self.stop_reason = why
        self.stopping.set()
        for path in (self.socket_path, state_path(self.index_dir)) if self._opened else ():
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def close(self, grace: float | None = None) -> None:
        """Stop, finish the request being answered (up to ``grace`` seconds, default serve.timeout),
        tell the waiting ones busy, release the lock."""
        self.request_stop("closing")
        self.on_event(f"stopping ({self.stop_reason})")
        deadline = time.monotonic() + (self.settings.serve.timeout if grace is None else grace)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._drain()
        self._release()
        self.on_event("stopped")

    def _release(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _drain(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                waiting = job.state == "waiting"
                job.state = "dropped"
            if waiting:
                self._finish(job, {"type": "busy", "reason": "the server is stopping"})

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    # -- connections -----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                time.sleep(0.05)
                continue
            if _peer_uid(conn) != os.getuid():
                self._count("refused")
                conn.close()
                continue
            if not self._handlers.acquire(blocking=False):
                self._count("busy")
                try:
                    conn.settimeout(1.0)
                    _send(conn, {"type": "busy", "reason": "too many connections"})
                except ClientGone:
                    pass
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), name="serve-handler", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            line = _read_line(conn)
            request = json.loads(line) if line else None
            if not isinstance(request, dict):
                return
            if not hmac.compare_digest(str(request.get("token", "")).encode(), self.token.encode()):
                self._count("refused")
                log.warning("a request with a wrong token was refused")
                _send(conn, {"type": "error", "kind": "auth", "message": "wrong token"})
                return
            if request.get("protocol") != PROTOCOL:
                _send(conn, {"type": "error", "kind": "protocol",
                             "message": f"protocol {request.get('protocol')!r}; this server speaks {PROTOCOL}"})
                return
            op = request.get("op")
            if op == "ping":
                _send(conn, {"type": "pong", "pid": os.getpid(), "ready": self.ready.is_set()})
            elif op == "status":
                _send(conn, self.status())
            elif op == "stop":
                _send(conn, {"type": "stopping", "pid": os.getpid()})
                self.request_stop("rag serve --stop")
            elif op in WORK:
                self._submit(conn, request)
            else:
                _send(conn, {"type": "error", "kind": "op", "message": f"unknown op {op!r}"})
        except (OSError, ValueError, ClientGone):
            pass
        finally:
            conn.close()
            self._handlers.release()

    def _submit(self, conn: socket.socket, request: dict[str, Any]) -> None:
        why = "the server is stopping" if self.stopping.is_set() else None if self.ready.is_set() else \
            "the server is still loading"
        with self._lock:
            if why is None and self._pending > self.queue_size:
                why = f"{self._pending - 1} requests are waiting already"
            if why is None:
                self._pending += 1
        if why is not None:
            self._count("busy")
            _send(conn, {"type": "busy", "reason": why})
            return
        job = Job(request, conn)
        self.last_active = time.monotonic()
        try:
            _send(conn, {"type": "queued", "wait": self.wait_timeout})
        except ClientGone:
            with self._lock:
                self._pending -= 1
            return
        self._jobs.put(job)
        if not job.started.wait(self.wait_timeout):
            with self._lock:  # the worker has not taken it: whoever changes the state first owns it
                dropped = job.state == "waiting"
                if dropped:
                    job.state = "dropped"
            if dropped:
                return self._finish(job, {"type": "busy", "reason": f"waited {self.wait_timeout:.1f} s for its turn"})
        job.done.wait()

    def idle_seconds(self) -> float:
        """Seconds since the last work request was taken or answered (0 while one is pending)."""
        with self._lock:
            return 0.0 if self._pending else time.monotonic() - self.last_active

    def status(self) -> dict[str, Any]:
        with self._lock:
            pending = self._pending
        return {"type": "status", "pid": os.getpid(), "ready": self.ready.is_set(),
                "stopping": self.stopping.is_set(), "socket": str(self.socket_path),
                "index_dir": str(self.index_dir), "protocol": PROTOCOL,
                "uptime": round(time.time() - self.started, 1), "queue": {"size": self.queue_size,
                                                                          "pending": pending},
                "wait_timeout": self.wait_timeout, "requests": dict(self.counts), "llm": self.llm,
                **(self.backend.describe() if self.backend is not None and self.ready.is_set() else {})}

    # -- the worker ------------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            with self._lock:
                if job.state != "waiting":
                    continue  # its handler told the client busy
                job.state = "running"
            job.started.set()
            try:
                trace = job.request.get("trace")
                parent = trace if isinstance(trace, dict) else None
                with self.work_lock, observe.span("serve.request", remote_parent=parent, op=job.request.get("op"),
                                                  client_run_id=job.request.get("client_run_id")):
                    message = self._run(job)
            except Exception:  # a bug: keep serving; the client works in-process
                log.exception("request failed")
                self._count("failed")
                message = {"type": "error", "kind": "internal", "message": "the server failed"}
            self._finish(job, message)

    def _finish(self, job: Job, message: dict[str, Any] | None) -> None:
        """The job's last line (None: the client is gone); frees its place in the queue."""
        with self._lock:
            self._pending -= 1
            self.last_active = time.monotonic()
        try:
            if message is not None:
                if message["type"] == "busy":
                    self._count("busy")
                _send(job.conn, message)
        except ClientGone:
            pass
        finally:
            job.done.set()

    def _run(self, job: Job) -> dict[str, Any] | None:
        waited = time.monotonic() - job.enqueued
        if self.stopping.is_set():
            return {"type": "busy", "reason": "the server is stopping"}
        request, started = job.request, time.perf_counter()
        try:
            settings = self._settings(request.get("settings"))
            unfit = self.backend.fits(settings)
            if unfit:
                return {"type": "error", "kind": "settings", "message": f"not served: {unfit}"}
            _send(job.conn, {"type": "started"})
            def send_text(piece: str) -> None:  # ClientGone stops the generation
                _send(job.conn, {"type": "text", "text": piece})

            op = request["op"]
            if op == "ask":
                result = self.backend.ask(settings, request, send_text if request.get("stream") else None)
            elif op == "search":
                result = self.backend.search(settings, request)
            else:
                result = self.backend.warm(settings, request)
            message = {"type": "result", **result}
            encode(message)  # not JSON-able would be a bug: found here, reported as one
        except ClientGone:
            return None
        except RagError as exc:  # the client works in-process, and reports it if it is real
            return {"type": "error", "kind": type(exc).__name__, "message": exc.message}
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("a request failed", exc_info=True)
            return {"type": "error", "kind": "request", "message": f"bad request: {type(exc).__name__}: {exc}"}
        self._count("served")
        stages = {"wait": waited, **{k: v for k, v in (result.get("answer", result).get("timings") or {}).items()
                                     if k != "total"}, "total": time.perf_counter() - started}
        # The request in the worker, after its wait in the queue; client_run_id joins it to the client's logs.
        observe.timings("serve", stages, label=op, client_run_id=request.get("client_run_id"))
        return message

    def _settings(self, data: Any) -> Settings:
        key = json.dumps(data, sort_keys=True)
        if key not in self._settings_cache:
            if len(self._settings_cache) > 64:
                self._settings_cache.clear()
            self._settings_cache[key] = settings_from_dict(data)
        return self._settings_cache[key]


def run(settings: Settings, *, llm: bool = True, on_event: Callable[[str], None] | None = None,
        watch: bool = False, idle_timeout: float | None = None) -> None:
    """Serve in the foreground until SIGTERM, SIGINT, `rag serve --stop` or ``idle_timeout`` seconds
    without a request; then clean up. ``watch``: keep the index in step with its folders meanwhile
    (a rag_cli.watch.Watcher on a thread, with the server's warm embedding model)."""
    server = Server(settings, llm=llm, on_event=on_event)
    server.open()
    stderr = os.dup(2)  # llama.cpp points fd 2 at /dev/null while it loads a model

    def on_signal(signum: int, _frame: Any) -> None:
        again = server.stopping.is_set()
        server.request_stop(signal.Signals(signum).name)  # the socket and state file go now
        if server._loading or (again and signum == signal.SIGINT):
            # Nothing is being answered while the models load, and model loaders run C++ threads
            # that must not be unwound: leave at once (the kernel releases the lock). A second
            # Ctrl-C leaves at once too.
            os.write(stderr, b"rag serve: stopped\n")
            os._exit(0 if not again else 130)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher: Watcher | None = None
    try:
        server.on_event(f"listening on {server.socket_path} (pid {os.getpid()}); loading models")
        server.start()
        server.load()
        if watch:
            from rag_cli.watch import watch_beside

            watcher = watch_beside(settings, embedder=server.backend.embedder, guard=server.work_lock,
                                   on_event=server.on_event,
                                   on_warning=lambda text: server.on_event(f"warning: {text}"))
        server.last_active = time.monotonic()  # idle from now on: loading was not a request
        while not server.stopping.wait(0.5):
            if idle_timeout is not None and server.idle_seconds() >= idle_timeout:
                server.request_stop(f"no request for {_duration(idle_timeout)}: --idle-timeout")
    finally:
        if watcher is not None:
            from rag_cli.watch import stop_beside

            stop_beside(watcher, settings.serve.timeout)
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)




def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
