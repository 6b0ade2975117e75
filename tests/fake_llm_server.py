"""A scripted OpenAI-compatible server on 127.0.0.1 for the llm.url tests (standard library only).

Each POST to a completions path takes the next scripted action (the last one repeats); every
request is recorded, so a test can tell whether the network was touched at all.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat_chunks(*pieces: str, model: str = "fake-model", usage: dict[str, int] | None = None) -> list[dict]:
    """The chunks of a streamed chat answer: a role chunk, one per piece, a finish, then usage."""
    chunks: list[dict[str, Any]] = [{"model": model, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    chunks += [{"model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
               for p in pieces]
    chunks.append({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append({"model": model, "choices": [], "usage": usage})
    return chunks


@dataclass
class Action:
    """What the server does with one completions request.

    kind: "sse" (send ``chunks``, ``delay`` apart, then [DONE] unless ``done`` is False),
    "status" (answer ``status`` with ``body``), "stall" (say nothing for ``delay`` seconds),
    "pings" (send SSE comments every 0.05 s for ``delay`` seconds, no token).
    ``stall_after``: after the chunks, say nothing for that many seconds (then close).
    """

    kind: str = "sse"
    chunks: list[dict] = field(default_factory=list)
    delay: float = 0.0
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    done: bool = True
    stall_after: float = 0.0


class FakeLlmServer:
    def __init__(self, *actions: Action, models: list[str] | None = None, tokenize: bool = False,
                 props: dict | None = None) -> None:
        self.actions = list(actions) or [Action(chunks=chat_chunks("Hello", " world."))]
        self.models = ["fake-model"] if models is None else models
        self.tokenize = tokenize
        self.props = props
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeLlmServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completions(self) -> list[dict[str, Any]]:
        """The recorded requests to a completions path (not the model list or tokenize)."""
        return [r for r in self.requests if r["path"].endswith("completions")]

    def _next(self) -> Action:
        with self._lock:
            return self.actions.pop(0) if len(self.actions) > 1 else self.actions[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when it closes

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _record(self, body: Any) -> None:
                with server._lock:
                    server.requests.append({"method": self.command, "path": self.path, "body": body,
                                            "headers": dict(self.headers)})

            def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode() if not isinstance(data, (bytes, str)) else (
                    data.encode() if isinstance(data, str) else data)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802
                self._record(None)
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                elif self.path == "/props" and server.props is not None:
                    self._json(200, server.props)
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                self._record(body)
                if self.path in ("/tokenize", "/extras/tokenize"):
                    if server.tokenize and self.path == "/tokenize":
                        self._json(200, {"tokens": list(range(len(body["content"].split())))})
                    else:
                        self._json(404, {"detail": "Not Found"})
                    return
                action = server._next()
                try:
                    self._act(action)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: as a real server
                    pass

            def _act(self, action: Action) -> None:
                if action.kind == "status":
                    self._json(action.status, action.body if action.body is not None else {}, action.headers)
                    return
                if action.kind == "stall":
                    time.sleep(action.delay)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if action.kind == "pings":
                    end = time.monotonic() + action.delay
                    while time.monotonic() < end:
                        self.wfile.write(b": ping\n\n")
                        self.wfile.flush()
                        time.sleep(0.05)
                    return
                for chunk in action.chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if action.delay:
                        time.sleep(action.delay)
                if action.stall_after:
                    time.sleep(action.stall_after)
                    return
                if action.done:
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()

        return Handler
