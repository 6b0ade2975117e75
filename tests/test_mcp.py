"""`rag mcp`: the installed `rag` command as an MCP server, driven by the MCP SDK's own clients
(stdio and streamable HTTP) over the samples indexed with the bundled MiniLM, answered by the
bundled Gemma GGUF: the tools and their schemas, search, grounded answers and refusals, reads by
id, tool errors that leave the server alive, nothing but protocol on stdout, and the HTTP
guards (bearer token, Host check, loopback bind).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from rag_cli.config import load_settings
from rag_cli.indexer import index_paths
from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow
RAG = str(Path(sys.executable).with_name("rag"))  # the installed command
QUESTION = "How often should I feed my starter?"
TOKEN = "test-token-0123456789abcdef"
READ_ONLY_TOOLS = {"search", "ask", "get_chunk", "get_document", "status"}


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    workdir = tmp_path_factory.mktemp("mcp")
    docs = workdir / "docs"
    shutil.copytree(SAMPLES, docs)
    index_paths(load_settings(workdir, env={}), [docs], embedder=real_embedder)
    return workdir


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    anyio.run(test)


@asynccontextmanager
async def stdio_session(workdir: Path, *args: str) -> AsyncIterator[Any]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=RAG, args=["mcp", *args], cwd=str(workdir), env=process_env())
    with open(workdir / f"stderr-{time.monotonic_ns()}.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def payload(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    assert isinstance(data, dict)
    return data


def error_of(result: Any) -> str:
    assert result.is_error, result
    return "\n".join(c.text for c in result.content)


def test_stdio_tools_search_ask_refuse_read_and_errors(indexed: Path) -> None:
    async def test() -> None:
        async with stdio_session(indexed) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == READ_ONLY_TOOLS  # no `index` without --allow-index
            assert tools["search"].input_schema["required"] == ["query"]
            assert tools["search"].input_schema["properties"]["where"]["anyOf"][0]["type"] == "array"
            assert all(t.description and "\n" not in t.description for t in tools.values())

            found = payload(await session.call_tool("search", {"query": QUESTION, "top_k": 3}))
            hits = found["hits"]
            assert len(hits) == 3 and hits[0]["path"].endswith("starter.md")
            assert {"chunk_id", "doc_id", "path", "page_start", "page_end", "heading", "score", "text"} <= set(hits[0])
            assert all(-1 <= h["score"] <= 1 and h["text"] and "::" in h["chunk_id"] for h in hits)
            assert [h["rank"] for h in hits] == [1, 2, 3]

            filtered = payload(await session.call_tool("search", {"query": "oven temperature",
                                                                  "where": ["type=pdf"]}))
            assert filtered["hits"] and {h["kind"] for h in filtered["hits"]} == {"pdf"}
            assert all(h["page_start"] for h in filtered["hits"])

            answer = payload(await session.call_tool("ask", {"question": QUESTION}))
            assert not answer["refused"] and "24 hours" in answer["answer"]
            assert answer["citations"] and any(c["path"].endswith("starter.md") for c in answer["citations"])
            assert all(c["chunk_ids"] and c["number"] >= 1 for c in answer["citations"])
            assert any(e["supported"] and e["path"].endswith("starter.md") and e["start"] < e["end"]
                       for e in answer["evidence"])  # the quotes, as `rag ask --json` has them

            refused = payload(await session.call_tool("ask", {"question": "zzz qqq xxyyzz"}))
            assert refused["refused"] and refused["refusal_reason"] in ("low_score", "no_passages")
            assert refused["evidence"] == []

            bad_filter = error_of(await session.call_tool("search", {"query": "starter", "where": ["path~x"]}))
            assert "--where 'path~x'" in bad_filter and "hint:" in bad_filter
            unknown = error_of(await session.call_tool("get_chunk", {"chunk_id": "nope::0"}))
            assert "no chunk 'nope::0'" in unknown
            assert "not a chunk id" in error_of(await session.call_tool("get_chunk", {"chunk_id": "garbage"}))
            schema = await session.call_tool("search", {"query": "starter", "top_k": 0})  # the schema says >= 1
            assert schema.is_error

            chunk = payload(await session.call_tool("get_chunk", {"chunk_id": hits[0]["chunk_id"], "neighbours": 1}))
            ids = [c["chunk_id"] for c in chunk["chunks"]]
            assert hits[0]["chunk_id"] in ids and len(ids) >= 2
            assert all(c["doc_id"] == hits[0]["doc_id"] for c in chunk["chunks"])
            assert [c["index"] for c in chunk["chunks"]] == sorted(c["index"] for c in chunk["chunks"])

            whole = payload(await session.call_tool("get_document", {"doc_id": hits[0]["doc_id"],
                                                                     "max_chars": 100_000}))
            assert not whole["truncated"] and [c["index"] for c in whole["chunks"]] == list(range(len(whole["chunks"])))
            capped = payload(await session.call_tool("get_document", {"doc_id": hits[0]["doc_id"], "max_chars": 200}))
            assert capped["truncated"] and sum(len(c["text"]) for c in capped["chunks"]) <= 201
            assert "start_chunk=" in capped["note"] and capped["next_chunk"] >= 0

            status = payload(await session.call_tool("status", {}))
            assert status["schema"] == "rag-cli/status/v1" and status["chunks"] > 0 and not status["dirty"]

            again = payload(await session.call_tool("search", {"query": "levain"}))  # still alive after the errors
            assert again["hits"]

    run(test)


def test_a_missing_index_is_a_tool_error_and_index_is_offered_only_when_allowed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES / "guides", docs)
    (tmp_path / ".rag.toml").write_text('[embedding]\nbackend = "hash"\n')  # fast: the real model is tested above

    async def test() -> None:
        async with stdio_session(tmp_path, "--allow-index") as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            assert tools == READ_ONLY_TOOLS | {"index"}
            missing = error_of(await session.call_tool("search", {"query": "starter"}))
            assert "error: no index in" in missing and "hint: run `rag index PATH`" in missing
            assert error_of(await session.call_tool("status", {}))
            report = payload(await session.call_tool("index", {"paths": [str(docs)]}))
            assert report["files"]["added"] == len(list(docs.iterdir())) and report["chunks"]["total"] > 0, report
            hits = payload(await session.call_tool("search", {"query": "feed the starter"}))["hits"]
            assert hits and hits[0]["path"].startswith(str(docs))
            (docs / "kiln.md").write_text("# Kiln\n\nThe zanzibarite kiln fires at dawn.\n")
            outside = subprocess.run([RAG, "index"], cwd=tmp_path, env=process_env(), capture_output=True,
                                     text=True, timeout=120)  # another process: the folders indexed before
            assert outside.returncode == 0, outside.stderr
            found = payload(await session.call_tool("search", {"query": "zanzibarite kiln"}))["hits"]
            assert found[0]["path"].endswith("kiln.md")  # the warm index reopened after that run
            chunk = payload(await session.call_tool("get_chunk", {"chunk_id": found[0]["chunk_id"]}))
            assert "zanzibarite" in chunk["chunks"][0]["text"]
            document = payload(await session.call_tool("get_document", {"doc_id": found[0]["doc_id"]}))
            assert document["path"].endswith("kiln.md")  # the document table is the new run's

    run(test)


def raw_exchange(command: list[str], cwd: Path, call: dict[str, Any]) -> tuple[list[str], str, int]:
    """Initialize, then one tools/call (id 2), as raw JSON lines: (every stdout line, stderr, exit code)."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call},
    ]
    errlog = open(cwd / f"raw-stderr-{time.monotonic_ns()}.log", "w+")  # a file: an undrained pipe would block
    proc = subprocess.Popen(command, cwd=cwd, env=process_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=errlog, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    lines = []
    try:
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
        proc.stdin.flush()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "stdout closed"
            lines.append(line)
            if '"id":2' in line.replace(" ", ""):
                break
        out, _ = proc.communicate(timeout=30)  # closes stdin: the server ends
    finally:
        if proc.poll() is None:
            proc.kill()
        errlog.seek(0)
        err = errlog.read()
        errlog.close()
    return lines + out.splitlines(keepends=True), err, proc.returncode


def protocol_only(lines: list[str]) -> list[dict[str, Any]]:
    junk = [line for line in lines if not line.startswith('{"jsonrpc":"2.0"')]
    assert not junk, f"not protocol on stdout: {junk[:5]}"
    return [json.loads(line) for line in lines]


def test_stdout_carries_only_protocol_messages(indexed: Path) -> None:
    """The raw stdout of `rag -v mcp` while it loads both models and answers: JSON-RPC messages only."""
    lines, err, code = raw_exchange([RAG, "-v", "mcp"], indexed, {"name": "ask", "arguments": {"question": QUESTION}})
    answer = next(m for m in protocol_only(lines) if m.get("id") == 2)
    assert code == 0, err[-2000:]  # stdin closed: the server ended cleanly
    assert not answer["result"].get("isError"), answer
    assert "24 hours" in answer["result"]["structuredContent"]["answer"]
    assert "serving MCP over stdio" in err and "llama" in err  # the server's lines, and llama.cpp's (-v), on stderr


def test_writes_to_fd_1_while_models_load_miss_the_protocol(tmp_path: Path, samples: Path) -> None:
    """What C code (llama.cpp), a child process or a print writes to stdout while the models load."""
    settings = load_settings(tmp_path, env={}, flags={"embedding.backend": "hash"})
    (tmp_path / ".rag.toml").write_text('[embedding]\nbackend = "hash"\n')
    index_paths(settings, [samples])
    script = (
        "import os, subprocess, sys\n"
        "from rag_cli.serve import backend\n"
        "load = backend.Backend.load\n"
        "def noisy(self, *, llm=True):\n"
        "    os.write(1, b'junk written to fd 1\\n')\n"
        "    subprocess.run(['echo', 'junk from a child process'])\n"
        "    print('junk from print', flush=True)\n"
        "    load(self, llm=False)\n"
        "backend.Backend.load = noisy\n"
        "sys.argv = ['rag', 'mcp']\n"
        "from rag_cli.cli.app import main\n"
        "main()\n"
    )
    lines, err, code = raw_exchange([sys.executable, "-c", script], tmp_path,
                                    {"name": "search", "arguments": {"query": "starter"}})
    found = next(m for m in protocol_only(lines) if m.get("id") == 2)
    assert code == 0 and found["result"]["structuredContent"]["hits"]
    assert all(junk in err for junk in ("junk written to fd 1", "junk from a child process", "junk from print"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_needs_the_token_and_a_local_host(indexed: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    proc = subprocess.Popen([RAG, "mcp", "--http", "--port", str(port)], cwd=indexed,
                            env=process_env(RAG_MCP_TOKEN=TOKEN), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, "rag mcp --http did not start"
                time.sleep(0.2)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}, timeout=5)
        assert wrong.status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        rebound = httpx.post(url, json=init, headers={**headers, "Host": f"evil.example:{port}"}, timeout=5)
        assert rebound.status_code == 421, rebound.text  # the SDK's DNS-rebinding guard
        foreign = httpx.post(url, json=init, headers={**headers, "Origin": "http://evil.example"}, timeout=5)
        assert foreign.status_code == 403, foreign.text

        async def test() -> None:
            import httpx2
            from mcp import ClientSession
            from mcp.client.streamable_http import streamable_http_client

            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http, \
                    streamable_http_client(url, http_client=http) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                assert {t.name for t in (await session.list_tools()).tools} == READ_ONLY_TOOLS
                hits = payload(await session.call_tool("search", {"query": QUESTION}))["hits"]
                assert hits and hits[0]["path"].endswith("starter.md")

        run(test)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_refuses_to_start_without_a_token_or_on_a_remote_address(indexed: Path) -> None:
    no_token = subprocess.run([RAG, "mcp", "--http"], cwd=indexed, env=process_env(), capture_output=True,
                              text=True, timeout=60)
    assert no_token.returncode == 2 and "RAG_MCP_TOKEN" in no_token.stderr and "hint:" in no_token.stderr
    remote = subprocess.run([RAG, "mcp", "--http", "--host", "0.0.0.0"], cwd=indexed,
                            env=process_env(RAG_MCP_TOKEN=TOKEN), capture_output=True, text=True, timeout=60)
    assert remote.returncode == 2 and "--allow-remote" in remote.stderr and not remote.stdout


# -- in-process: the gate, the size cap, the generation time limit (no subprocess, no model) -------------

def test_turns_reject_past_the_queue_and_after_the_wait() -> None:
    import threading

    from rag_cli.mcp_server import Turns

    turns = Turns(queue_size=1, timeout=0.3)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with turns.take():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    waited: list[str] = []
    waiter = threading.Thread(target=lambda: waited.append(_busy_message(turns)))
    waiter.start()
    time.sleep(0.05)  # the waiter is queued: one more is one too many
    assert "1 calls are waiting already" in _busy_message(turns)
    waiter.join(5)
    assert waited and "waited 0 s for its turn" in waited[0]
    release.set()
    holder.join(5)
    with turns.take():  # free again
        pass


def _busy_message(turns: Any) -> str:
    from rag_cli.mcp_server import Busy

    try:
        with turns.take():
            return "no wait"
    except Busy as exc:
        return exc.message


def test_the_size_cap_keeps_the_asked_chunk_and_its_nearest_neighbours() -> None:
    from rag_cli.mcp_server import _capped

    chunks = [{"chunk_id": f"d::{i}", "text": "x" * 100} for i in range(5)]
    kept, truncated = _capped(chunks, 250, keep=3)
    assert truncated and [c["chunk_id"] for c in kept] == ["d::2", "d::3", "d::4"]
    assert [len(c["text"]) for c in kept] == [100, 100, 51] and kept[2]["text"].endswith("…") and kept[2]["truncated"]
    assert _capped(chunks, 1000) == (chunks, False)


def test_an_answer_generating_past_serve_timeout_is_stopped_as_a_tool_error(tmp_path: Path, samples: Path) -> None:
    from rag_cli.mcp_server import Tools, TooSlow
    from rag_cli.serve.backend import Backend
    from rag_cli.testing.fakes import ScriptedGenerator

    class SlowGenerator(ScriptedGenerator):  # streams a word every 0.1 s
        def generate(self, messages, *, max_tokens, temperature, on_text=None):  # noqa: ANN001
            def slow(piece: str) -> None:
                time.sleep(0.1)
                if on_text:
                    on_text(piece)

            return super().generate(messages, max_tokens=max_tokens, temperature=temperature, on_text=slow)

    flags = {"embedding.backend": "hash", "retrieval.min_score": 0.0, "serve.timeout": 1.0, "ask.cache": False}
    settings = load_settings(tmp_path, env={}, flags=flags)
    index_paths(settings, [samples])
    gen = SlowGenerator(" ".join(["Feed it every 24 hours [1]."] * 10))
    tools = Tools(settings, backend=Backend(settings, generators={"bundled": gen}))
    started = time.monotonic()
    with pytest.raises(TooSlow, match="longer than 1 s"):
        tools.ask(QUESTION)
    assert 1.0 < time.monotonic() - started < 3.0
    assert tools.search(QUESTION)["hits"]  # the next call is served


def test_stdio_watch_follows_the_folder(tmp_path: Path, real_embedder) -> None:
    """`rag mcp --watch`: a file saved into an indexed folder becomes searchable, and its chunks
    leave when it is deleted, without restarting the server."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    index_paths(load_settings(tmp_path, env={}), [docs], embedder=real_embedder)
    query = {"query": "zorblax calibration purple widget", "top_k": 1}

    async def top_path(session: Any) -> str:
        hits = payload(await session.call_tool("search", query))["hits"]
        return hits[0]["path"] if hits else ""

    async def wait_for(session: Any, found: bool) -> None:
        deadline = time.monotonic() + 120
        while (await top_path(session)).endswith("zorblax.md") != found:
            assert time.monotonic() < deadline, f"the watcher did not {'add' if found else 'remove'} zorblax.md"
            await anyio.sleep(0.5)

    async def test() -> None:
        async with stdio_session(tmp_path, "--watch") as session:
            before = payload(await session.call_tool("status", {}))["files"]
            note = docs / "zorblax.md"
            note.write_text("# Zorblax\n\nThe zorblax calibration needs a purple widget every Tuesday.\n",
                            encoding="utf-8")
            await wait_for(session, found=True)
            note.unlink()
            await wait_for(session, found=False)
            assert payload(await session.call_tool("status", {}))["files"] == before

    run(test)
