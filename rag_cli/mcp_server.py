"""`rag mcp`: the index as an MCP server (Model Context Protocol), for Claude Desktop, Claude Code,
Cursor and other agents: tools to search, ask, read chunks and documents, describe the index and,
when allowed, index.

The warm state is `rag serve`'s (serve/backend.py ``Backend``): one embedder, a pool of language
models, the index reopened when a `rag index` run changed it (its stamp is read before every
call). The Backend is not thread-safe and the models answer one request at a time, so every call
that touches it takes its turn through a ``Turns`` gate: at most ``serve.queue_size`` calls wait
(one more is a tool error at once), a call waits at most ``serve.timeout`` seconds for its turn,
and an answer whose generation runs longer than ``serve.timeout`` is stopped.

Errors: a RagError (bad filter, no index, a model that fails) becomes a tool error (``isError``)
with the message and hint the CLI prints; the server goes on. Over stdio, stdout is the
protocol's alone: ``protect_stdout`` moves the wire to a private descriptor and points fd 1 at
stderr before any model loads, so neither Python nor llama.cpp's C code can write into it.
Over HTTP (streamable HTTP): a bearer token from the environment, loopback unless allowed
otherwise, and the SDK's Host/Origin checks against DNS rebinding.
"""

from __future__ import annotations

import hmac
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from rag_cli.config import Settings
from rag_cli.errors import ConfigError, GenerationError, InputError, RagError

if TYPE_CHECKING:
    from rag_cli.watch import Watcher

log = logging.getLogger(__name__)
TOKEN_ENV = "RAG_MCP_TOKEN"
DEFAULT_PORT = 8765
MAX_CHARS = 8000  # the default size cap of get_chunk / get_document results (characters of text)
CHARS_LIMIT = 100_000
DOCUMENT_BATCH = 64  # chunks read at a time by get_document


class Busy(RagError):
    """Too many calls are waiting, or one waited too long for its turn."""


class TooSlow(GenerationError):
    """Raised from the streaming callback to stop a generation that ran past serve.timeout (a
    RagError: the generators let it through, and the Asker reports it as the answer's error)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the answer took longer than {timeout:.0f} s and was stopped",
                         hint="a smaller model (`model`), fewer passages (retrieval.top_k), or a longer "
                              "serve.timeout")


def error_text(exc: RagError) -> str:
    """The tool error's text: what the CLI's error boundary prints."""
    return f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else "")


class Turns:
    """One call at a time on the warm state; a bounded number waiting, each for a bounded time."""

    def __init__(self, queue_size: int, timeout: float) -> None:
        self.queue_size = queue_size
        self.timeout = timeout
        self._turn = threading.Lock()
        self._count = threading.Lock()
        self._pending = 0  # waiting + the one being answered

    @property
    def lock(self) -> threading.Lock:
        """The turn itself: a watcher holds it around each batch (no call reads a half-written one)."""
        return self._turn

    @contextmanager
    def take(self, what: str = "call") -> Iterator[None]:
        with self._count:
            if self._pending > self.queue_size:
                raise Busy(f"the server is busy: {self._pending - 1} calls are waiting already",
                           hint="try again in a moment (serve.queue_size sets how many may wait)")
            self._pending += 1
        try:
            if not self._turn.acquire(timeout=self.timeout):
                raise Busy(f"the {what} waited {self.timeout:.0f} s for its turn",
                           hint="the models answer one call at a time; try again (serve.timeout sets the wait)")
            try:
                yield
            finally:
                self._turn.release()
        finally:
            with self._count:
                self._pending -= 1


def _split_chunk_id(chunk_id: str) -> tuple[str, int]:
    doc_id, sep, index = chunk_id.rpartition("::")
    if not sep or not doc_id or not index.isdigit():
        raise InputError(f"{chunk_id!r} is not a chunk id", hint="chunk ids look like DOC_ID::N; `search` returns them")
    return doc_id, int(index)


def _chunk_dict(stored: Any) -> dict[str, Any]:
    m = stored.metadata
    return {"chunk_id": stored.chunk_id, "doc_id": m.get("doc_id", ""), "path": m.get("source", ""),
            "index": int(m.get("index", 0)), "page_start": m.get("page_start"), "page_end": m.get("page_end"),
            "heading": m.get("heading", ""), "text": stored.text}


def _capped(chunks: list[dict[str, Any]], max_chars: int, keep: int | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Chunks in order up to ``max_chars`` of text in all; ``keep`` (a position) is taken first and
    its neighbours outward from it. A chunk cut short ends with an ellipsis."""
    order = list(range(len(chunks)))
    if keep is not None:
        order.sort(key=lambda i: (abs(i - keep), i > keep))
    budget, taken, truncated = max_chars, set(), False
    out: dict[int, dict[str, Any]] = {}
    for i in order:
        text = chunks[i]["text"]
        if budget <= 0:
            truncated = True
            continue
        if len(text) > budget:
            out[i] = {**chunks[i], "text": text[:budget] + "…", "truncated": True}
            truncated = True
            budget = 0
        else:
            out[i] = chunks[i]
            budget -= len(text)
        taken.add(i)
    return [out[i] for i in sorted(out)], truncated


@dataclass(frozen=True)
class Limits:
    queue_size: int
    timeout: float


class Tools:
    """What each tool does, in plain Python (the MCP layer below only describes and calls them).
    Built lazily on the first call that needs the index: a server started before `rag index`
    reports IndexNotFound per call and works once the index exists."""

    def __init__(self, settings: Settings, *, allow_index: bool = False, backend: Any = None) -> None:
        self.settings = settings
        self.allow_index = allow_index
        self.turns = Turns(settings.serve.queue_size, settings.serve.timeout)
        self._backend = backend

    # -- the warm state -------------------------------------------------------------------------------
    def backend(self) -> Any:
        """The Backend (opens the index and its embedder the first time: IndexNotFound, IndexMismatch)."""
        if self._backend is None:
            from rag_cli.serve.backend import Backend

            self._backend = Backend(self.settings)
        return self._backend

    def warm_up(self) -> None:
        """Open the index and load the models before the first call (a failure is logged; the calls
        report it)."""
        started = time.perf_counter()
        try:
            with self.turns.take("warm-up"):
                self.backend().load(llm=True)
        except RagError as exc:
            log.warning("not warmed up: %s", exc.message)
            return
        log.info("rag mcp: warm in %.1f s", time.perf_counter() - started)

    # -- the tools ------------------------------------------------------------------------------------
    def search(self, query: str, top_k: int | None = None, where: list[str] | None = None) -> dict[str, Any]:
        from rag_cli.retrieve.filters import parse_where

        if not query.strip():
            raise InputError("the query is empty")
        filt = parse_where(where or [])  # ConfigError before any wait
        k = top_k or self.settings.retrieval.top_k
        with self.turns.take("search"):
            searcher, _ = self.backend().open(self.settings)
            hits, _ = searcher.search(query, k, filt)
        return {"query": query, "hits": [{"rank": h.rank, **h.to_dict()} for h in hits]}

    def ask(self, question: str, where: list[str] | None = None, model: str | None = None) -> dict[str, Any]:
        from rag_cli.retrieve.filters import parse_where

        if not question.strip():
            raise InputError("the question is empty")
        filt = parse_where(where or [])
        timeout = self.settings.serve.timeout
        with self.turns.take("question"):
            _, asker = self.backend().open(self.settings)
            started = time.monotonic()
            stopped: list[TooSlow] = []

            def on_text(_piece: str) -> None:  # called per generated piece: the generation's clock
                if time.monotonic() - started > timeout:
                    stopped.append(TooSlow(timeout))
                    raise stopped[-1]

            answer = asker.ask(question, where=filt, model=model, on_text=on_text)
        if stopped:  # the Asker made it the answer's error (the passages without an answer)
            raise stopped[-1]
        if answer.error:
            raise GenerationError(answer.error, hint="`rag doctor` checks the language models; `search` still "
                                                     "works without one")
        return {"question": question, "answer": answer.answer, "refused": answer.refused,
                "refusal_reason": answer.refusal_reason or None, "model": answer.model,
                "citations": [{k: v for k, v in c.to_dict().items() if k != "chunk_id"} for c in answer.citations
                              if c.cited],
                "evidence": [e.to_dict() for e in answer.evidence],
                "cached": answer.cached}

    def get_chunk(self, chunk_id: str, neighbours: int = 1, max_chars: int = MAX_CHARS) -> dict[str, Any]:
        doc_id, index = _split_chunk_id(chunk_id)
        with self.turns.take("read"):
            searcher, _ = self.backend().open(self.settings)
            wanted = [i for i in range(index - neighbours, index + neighbours + 1) if i >= 0]
            stored = sorted(searcher.store.chunks_at(doc_id, wanted), key=lambda c: c.metadata.get("index", 0))
        chunks = [_chunk_dict(c) for c in stored]
        at = next((i for i, c in enumerate(chunks) if c["chunk_id"] == chunk_id), None)
        if at is None:
            raise InputError(f"no chunk {chunk_id!r} in the index",
                             hint="chunk ids come from `search` (the index may have changed since: search again)")
        kept, truncated = _capped(chunks, max_chars, keep=at)
        return {"chunk_id": chunk_id, "doc_id": doc_id, "path": chunks[at]["path"], "chunks": kept,
                "truncated": truncated,
                **({"note": f"cut to {max_chars} characters; raise max_chars for more"} if truncated else {})}

    def get_document(self, doc_id: str, start_chunk: int = 0, max_chars: int = MAX_CHARS) -> dict[str, Any]:
        with self.turns.take("read"):
            searcher, _ = self.backend().open(self.settings)
            info = next((d for d in searcher.documents if d.doc_id == doc_id), None)
            if info is None:
                raise InputError(f"no document {doc_id!r} in the index",
                                 hint="document ids come from `search` (doc_id) or `get_chunk`")
            stored, at, budget = [], max(0, start_chunk), max_chars
            while budget > 0:
                batch = searcher.store.chunks_at(doc_id, list(range(at, at + DOCUMENT_BATCH)))
                if not batch:
                    break
                batch.sort(key=lambda c: c.metadata.get("index", 0))
                stored += batch
                budget -= sum(len(c.text) for c in batch)
                at += DOCUMENT_BATCH
            more = bool(searcher.store.chunks_at(doc_id, [at])) if budget <= 0 else False
        chunks, truncated = _capped([_chunk_dict(c) for c in stored], max_chars)
        truncated = truncated or more
        result: dict[str, Any] = {"doc_id": doc_id, "path": info.path, "start_chunk": max(0, start_chunk),
                                  "chunks": chunks, "truncated": truncated}
        if truncated and chunks:
            last = chunks[-1]
            next_chunk = last["index"] + (0 if last.get("truncated") else 1)
            result["next_chunk"] = next_chunk
            result["note"] = (f"cut to {max_chars} characters; call again with start_chunk={next_chunk} for the "
                              "rest (consecutive chunks overlap by a few words)")
        return result

    def status(self) -> dict[str, Any]:
        from rag_cli.api import Index

        return Index(self.settings).status().to_dict()  # reads the manifest only: no turn needed

    def index(self, paths: list[str] | None = None, rebuild: bool = False) -> dict[str, Any]:
        if not self.allow_index:  # not registered without --allow-index; a guard all the same
            raise ConfigError("indexing is off", hint="start the server with `rag mcp --allow-index`")
        from rag_cli.api import Index

        roots = [Path(p).expanduser() for p in paths or []]
        with self.turns.take("index run"):
            embedder = self._backend.embedder if self._backend is not None else None
            report = Index(self.settings, serve=False, embedder=embedder).index(roots, rebuild=rebuild)
        return report.to_dict()  # the next call sees the new stamp and reopens the index


Where = Annotated[list[str] | None, Field(description="Filters, all must hold: path=GLOB, type=pdf|markdown|text|"
                                                      "jsonl, page=N or N-M, modified>=DATE (or 30d), FIELD=VALUE, "
                                                      "FIELD>=N.")]
Chars = Annotated[int, Field(ge=100, le=CHARS_LIMIT, description="Most characters of text in the result.")]


def _call(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A tool's body; a RagError becomes a tool error (isError) with the CLI's message and hint."""
    try:
        return body()
    except RagError as exc:
        raise ToolError(error_text(exc)) from None


def build_server(tools: Tools) -> Any:
    """The MCPServer with the tools registered (``index`` only when allowed)."""
    from mcp.server import MCPServer
    from mcp_types import ToolAnnotations

    from rag_cli import __version__

    server: Any = MCPServer("rag", version=__version__, log_level="WARNING",
                            instructions="Search and question answering over the user's own indexed documents. "
                                         "Cite paths (and pages) from the results.")

    def search(query: Annotated[str, Field(description="What to look for, in words.")],
               top_k: Annotated[int | None, Field(ge=1, le=50, description="Passages to return.")] = None,
               where: Where = None) -> dict[str, Any]:
        return _call(lambda: tools.search(query=query, top_k=top_k, where=where))

    def ask(question: Annotated[str, Field(description="The question.")], where: Where = None,
            model: Annotated[str | None, Field(description="Language model: 'bundled', 'smollm2', a GGUF path; "
                                                           "default: the configured one.")] = None) -> dict[str, Any]:
        return _call(lambda: tools.ask(question=question, where=where, model=model))

    def get_chunk(chunk_id: Annotated[str, Field(description="A chunk id from search (DOC_ID::N).")],
                  neighbours: Annotated[int, Field(ge=0, le=10, description="Adjacent chunks on each side.")] = 1,
                  max_chars: Chars = MAX_CHARS) -> dict[str, Any]:
        return _call(lambda: tools.get_chunk(chunk_id=chunk_id, neighbours=neighbours, max_chars=max_chars))

    def get_document(doc_id: Annotated[str, Field(description="A document id (doc_id from search).")],
                     start_chunk: Annotated[int, Field(ge=0, description="First chunk to return.")] = 0,
                     max_chars: Chars = MAX_CHARS) -> dict[str, Any]:
        return _call(lambda: tools.get_document(doc_id=doc_id, start_chunk=start_chunk, max_chars=max_chars))

    def status() -> dict[str, Any]:
        return _call(tools.status)

    def index(paths: Annotated[list[str] | None, Field(description="Files or folders to index; none: every "
                                                                   "folder indexed before.")] = None,
              rebuild: Annotated[bool, Field(description="Start the index again from nothing.")] = False
              ) -> dict[str, Any]:
        return _call(lambda: tools.index(paths=paths, rebuild=rebuild))

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    described: list[tuple[Callable[..., dict[str, Any]], str, Any]] = [
        (search, "Search the user's indexed documents; returns passages with path, pages, heading, score and "
                 "chunk id.", read_only),
        (ask, "Answer a question from the user's documents with numbered citations, or refuse (refused, "
              "refusal_reason) when they do not hold the answer.", read_only),
        (get_chunk, "Read one chunk by id with its adjacent chunks from the same document.", read_only),
        (get_document, "Read a document by id, chunk by chunk in order, within a size cap.", read_only),
        (status, "Describe the index: files, chunks, how it was built, and whether it is up to date.", read_only),
    ]
    if tools.allow_index:
        described.append((index, "Index files or folders (incrementally) so that search and ask see them.",
                          ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)))
    for fn, description, hints in described:
        server.add_tool(fn, name=fn.__name__, description=description, annotations=hints,
                        structured_output=True)
    return server


# -- transports --------------------------------------------------------------------------------------

def protect_stdout() -> io.TextIOWrapper:
    """The protocol's own stdout: a private duplicate of fd 1; fd 1 (and ``sys.stdout``) then
    point at stderr, so that nothing else -- a print, a progress bar, llama.cpp's C code, a child
    process -- can write into the protocol stream."""
    import fcntl

    wire = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return io.TextIOWrapper(os.fdopen(wire, "wb", buffering=0), encoding="utf-8", write_through=True)


def run_stdio(tools: Tools, wire: io.TextIOWrapper) -> None:
    """Serve over stdin and ``wire`` (from ``protect_stdout``) until stdin closes."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(tools)
    lowlevel = server._lowlevel_server  # MCPServer.run_stdio_async takes no streams; this is what it runs

    async def main() -> None:
        async with stdio_server(stdout=anyio.wrap_file(wire)) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

    anyio.run(main)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_token(environ: dict[str, str] | None = None) -> str:
    """The bearer token HTTP clients must send (from RAG_MCP_TOKEN); ConfigError without one."""
    token = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    if len(token) < 16:
        raise ConfigError(f"`rag mcp --http` needs a bearer token of at least 16 characters in {TOKEN_ENV}"
                          + (" (it is shorter)" if token else ""),
                          hint=f"export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') "
                               "and give clients the same value as `Authorization: Bearer ...`")
    return token


def check_bind(host: str, allow_remote: bool) -> None:
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"--host {host} is not a loopback address: other machines could reach the server",
                          hint="keep the default (127.0.0.1), or add --allow-remote if that is what you want "
                               "(the token still applies; prefer TLS in front of it)")


class BearerAuth:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": "unauthorized", "detail": f"send the token of {TOKEN_ENV} "
                                         "as Authorization: Bearer ..."}, status_code=401,
                                        headers={"WWW-Authenticate": 'Bearer realm="rag mcp"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(tools: Tools, *, host: str, port: int, token: str) -> Any:
    """The streamable HTTP app at /mcp: bearer token first, then the SDK's Host/Origin checks."""
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = ["127.0.0.1", "localhost", "[::1]"] if is_loopback(host) else [host]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                         allowed_hosts=[f"{h}:{port}" for h in hosts],
                                         allowed_origins=[f"{scheme}://{h}:{port}" for h in hosts
                                                          for scheme in ("http", "https")])
    app = build_server(tools).streamable_http_app(transport_security=security, host=host)
    return BearerAuth(app, token)


def run_http(tools: Tools, *, host: str, port: int, token: str, on_event: Callable[[str], None]) -> None:
    import uvicorn

    config = uvicorn.Config(http_app(tools, host=host, port=port, token=token), host=host, port=port,
                            log_level="warning", lifespan="on")
    on_event(f"serving MCP on http://{host}:{port}/mcp (pid {os.getpid()})")
    uvicorn.Server(config).run()


def start_watcher(tools: Tools, on_event: Callable[[str], None]) -> Watcher | None:
    """`--watch`: index the changes of the index's folders while serving (rag_cli.watch, as
    `rag serve --watch` does): a catch-up pass, then a batch per burst of changes, each holding
    the turn, with the warm embedding model once the warm-up has loaded it. The next call sees the
    new stamp and reopens the index. None (a warning) when there is no index to follow yet."""
    from rag_cli.index_dir import IndexPaths
    from rag_cli.watch import watch_beside

    if not IndexPaths(tools.settings.index_dir).exists():
        log.warning("--watch: no index in %s yet: nothing to watch (run `rag index PATH`, then restart)",
                    tools.settings.index_dir)
        return None
    return watch_beside(tools.settings, embedder=tools._backend.embedder if tools._backend is not None else None,
                        guard=tools.turns.lock, on_event=on_event, on_warning=lambda text: log.warning("%s", text))


def serve(settings: Settings, *, http: bool = False, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          allow_remote: bool = False, allow_index: bool = False, watch: bool = False,
          on_event: Callable[[str], None] | None = None) -> None:
    """Run `rag mcp` in the foreground: over stdio (until stdin closes) or streamable HTTP.
    ``watch``: keep the index in step with its folders meanwhile (``start_watcher``)."""
    on_event = on_event or (lambda text: log.info("%s", text))
    if http:
        check_bind(host, allow_remote)
        token = http_token()
        wire = None
    else:
        wire = protect_stdout()  # before anything loads a model
    tools = Tools(settings, allow_index=allow_index)
    watchers: list[Watcher] = []

    def warm_up() -> None:
        tools.warm_up()
        if watch:  # after the warm-up: the batches share its embedding model
            watcher = start_watcher(tools, on_event)
            if watcher is not None:
                watchers.append(watcher)

    threading.Thread(target=warm_up, name="mcp-warm-up", daemon=True).start()
    try:
        if wire is not None:
            on_event(f"serving MCP over stdio for {settings.index_dir} (pid {os.getpid()})")
            run_stdio(tools, wire)
        else:
            run_http(tools, host=host, port=port, token=token, on_event=on_event)
    finally:
        if watchers:  # let a batch being written finish: the index stays consistent
            from rag_cli.watch import stop_beside

            for watcher in watchers:
                stop_beside(watcher, settings.serve.timeout)
