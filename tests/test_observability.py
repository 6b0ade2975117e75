"""Observability: `-v` prints one timings line per command; `--log-format json` writes one JSON
object per line on stderr, each with the run id, and ends each command with a timings event;
OpenTelemetry spans per stage, only when OTEL_EXPORTER_OTLP_ENDPOINT is set (else opentelemetry is
never imported), sent to a real collector on 127.0.0.1 (OTLP/HTTP and gRPC), never holding a
command up when the collector is not there.

In-process tests use the hash embedder and an in-memory span exporter injected with
``observe.use_provider``; the subprocess tests run `python -m rag_cli` against local collectors.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rag_cli import observe
from rag_cli.config import load_settings
from rag_cli.indexer import index_paths
from tests.conftest import REPO, SAMPLES
from tests.indexing_helpers import invoke

QUESTION = "How often should I feed my starter?"
HASH_TOML = '[embedding]\nbackend = "hash"\n\n[retrieval]\nmin_score = 0.0\n\n[ask]\nmin_support = 0.0\n'
FAQ = SAMPLES / "faq.txt"
RAG = [sys.executable, "-m", "rag_cli"]
STAGE = re.compile(r"([\w.-]+) (\d+\.\d{3}) s")


@pytest.fixture
def workdir(tmp_path: Path, samples: Path) -> Path:
    """A folder with a .rag.toml (hash embedder) and the samples in docs/, not indexed yet."""
    (tmp_path / ".rag.toml").write_text(HASH_TOML)
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(
        {"id": f"q{i}", "question": q, "answers": ["24 hours"], "relevant": [], "answerable": True}) + "\n"
        for i, q in enumerate([QUESTION, "What flour makes a country loaf?", "How long does dough rise?"])))
    return tmp_path


@pytest.fixture
def indexed(workdir: Path, samples: Path) -> Path:
    index_paths(load_settings(workdir, env={}), [samples])
    return workdir


def cli(args: list[str], cwd: Path, **env: str):
    return invoke(args, cwd, RAG_NO_SERVE="1", **env)


def timing_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " timings " in line or line.startswith("timings ")]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is a JSON object, or this fails


# What each command reports (besides total), run in `indexed` except `index` (run in `workdir`).
COMMANDS = {
    "config": (["config"], set()),
    "chunk-preview": (["chunk-preview", str(FAQ)], {"load", "tokenizer", "chunk"}),
    "index": (["index", "docs"], {"walk", "load", "chunk", "open", "embed", "write", "keyword"}),  # model: hash
    "ask": (["ask", QUESTION, "--retrieve-only"], {"open", "embed", "retrieve", "retrieve.dense", "retrieve.keyword",
                                                   "retrieve.fusion"}),
    "eval": (["eval", "q.jsonl", "--retrieval-only"], {"embed", "retrieve", "retrieve.dense"}),
}


# -- the human line (-v) ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_verbose_prints_one_timings_line_per_command(command: str, workdir: Path, samples: Path) -> None:
    args, stages = COMMANDS[command]
    if command != "index":
        index_paths(load_settings(workdir, env={}), [samples])
    quiet = cli(args, workdir)
    assert quiet.exit_code == 0, quiet.output
    assert not timing_lines(quiet.stderr)  # without -v: nothing
    if command == "index":  # index again from scratch, in another folder
        shutil.copytree(workdir, workdir / "again", ignore=shutil.ignore_patterns(".rag"))
        workdir = workdir / "again"
    result = cli(["-v", *args], workdir)
    assert result.exit_code == 0, result.output
    lines = timing_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    title = re.search(rf"timings {command}( \[[^]]*\])?: ", lines[0])
    assert title, lines[0]
    shown = lines[0][title.end():]
    names = [name for name, _ in STAGE.findall(shown)]
    assert names[-1] == "total"
    # Sub-stages are shown in brackets after their parent, by their short name.
    expected = {s.split(".", 1)[1] if "." in s else s for s in stages}
    assert expected <= set(names), (expected, names)
    if command == "eval":
        assert "(median " in shown and "3 questions" in shown
    assert result.stdout  # the result itself is unchanged on stdout


def test_timings_line_format() -> None:
    line = observe.format_timings("ask", {"embed": 0.0123, "retrieve.dense": 0.01, "retrieve.keyword": 0.02,
                                          "retrieve": 0.031, "narrow": 0.0, "total": 1.5}, note="model m (fast)")
    assert line == ("timings ask: embed 0.012 s, retrieve 0.031 s (dense 0.010 s, keyword 0.020 s), "
                    "total 1.500 s; model m (fast)")
    totals, medians = observe.summarize([{"embed": 1.0, "retrieve": 2.0}, {"embed": 3.0}, {"embed": 2.0}])
    assert totals == {"embed": 6.0, "retrieve": 2.0} and medians == {"embed": 2.0, "retrieve": 2.0}
    assert observe.format_timings("eval", {**totals, "retrieve.dense": 1.5}, medians, label="a") == \
        "timings eval [a]: embed 6.000 s (median 2.000 s), retrieve 2.000 s (median 2.000 s; dense 1.500 s)"


def test_index_timings_are_complete_and_do_not_overlap(workdir: Path, samples: Path) -> None:
    report = index_paths(load_settings(workdir, env={}), [samples])
    t = report.timings
    assert set(t) == {"walk", "load", "chunk", "open", "model", "embed", "write", "keyword", "wait"}
    assert all(v > 0 for k, v in t.items() if k not in ("wait", "model")), t  # the hash embedder loads nothing
    assert t["model"] == 0.0
    # The writer's stages happen one after the other on its thread: they fit in the run.
    writer = t["walk"] + t["open"] + t["model"] + t["embed"] + t["write"] + t["keyword"] + t["wait"]
    assert writer <= report.seconds * 1.01
    again = index_paths(load_settings(workdir, env={}), [samples])  # nothing to do: chromadb never opened
    assert again.timings["open"] == again.timings["embed"] == again.timings["keyword"] == 0.0


# -- JSON logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_json_logs_end_with_the_timings_event(command: str, workdir: Path, samples: Path) -> None:
    args, stages = COMMANDS[command]
    if command != "index":
        index_paths(load_settings(workdir, env={}), [samples])
    result = cli(["--log-format", "json", *args], workdir)
    assert result.exit_code == 0, result.output
    records = json_lines(result.stderr)
    assert records, "no log line"
    for record in records:
        assert {"ts", "level", "logger", "msg", "run_id"} <= set(record)
        assert record["run_id"] == observe.run_id()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    event = records[-1]
    assert event["event"] == "timings" and event["command"] == command and event["level"] == "INFO"
    assert event["logger"] == "rag_cli.timings" and event["msg"].startswith(f"timings {command}")
    assert stages | {"total"} <= set(event["stages"])
    assert all(isinstance(v, float) for v in event["stages"].values()) and event["wall"] > 0
    assert [r for r in records if r.get("event") == "timings"] == [event]
    if command == "eval":
        assert event["questions"] == 3 and set(event["medians"]) >= {"embed", "retrieve"}


def test_json_logs_from_the_environment_and_a_bad_format(indexed: Path) -> None:
    result = cli(["config"], indexed, RAG_LOG_FORMAT="json")
    assert result.exit_code == 0
    assert json_lines(result.stderr)[-1]["command"] == "config"
    bad = cli(["--log-format", "xml", "config"], indexed)
    assert bad.exit_code == 2 and "xml" in bad.output


def test_json_log_levels_without_and_with_verbose(indexed: Path) -> None:
    """Without -v: warnings and errors, the CLI's own messages and the timings event (rag_cli's
    INFO lines are -v details). With -v: rag_cli's debug lines too."""
    plain = json_lines(cli(["--log-format", "json", "ask", QUESTION, "--retrieve-only"], indexed).stderr)
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") or r["logger"] in ("rag_cli.timings", "rag_cli.cli")
               for r in plain), plain
    verbose = json_lines(cli(["--log-format", "json", "-v", "ask", QUESTION, "--retrieve-only"], indexed).stderr)
    assert any(r["level"] == "DEBUG" and r["logger"] == "rag_cli.serve.client" for r in verbose), verbose
    assert verbose[-1]["event"] == "timings"


def test_json_logs_carry_errors_and_hints(indexed: Path) -> None:
    result = cli(["--log-format", "json", "chunk-preview", "missing.txt"], indexed)
    assert result.exit_code == 2
    record, event = json_lines(result.stderr)
    assert record["level"] == "ERROR" and record["logger"] == "rag_cli.cli"
    assert record["msg"] == "missing.txt: no such file" and record["run_id"] == observe.run_id()
    # a failed command ends with the timings event too: its outcome, exit code and error class
    assert event["event"] == "timings" and event["command"] == "chunk-preview" and event["outcome"] == "failed"
    assert event["exit_code"] == 2 and event["error"] == "InputError" and set(event["stages"]) == {"total"}
    assert event["msg"].endswith("failed, exit code 2 (InputError)")
    unsupported = cli(["--log-format", "json", "chunk-preview", ".rag.toml"], indexed)
    record, _ = json_lines(unsupported.stderr)
    assert "hint" in record and record["hint"].startswith("supported:")
    empty = indexed / "empty"
    empty.mkdir()
    (empty / ".rag.toml").write_text(HASH_TOML)
    missing = cli(["--log-format", "json", "ask", QUESTION], empty)
    assert missing.exit_code == 4
    event = json_lines(missing.stderr)[-1]
    assert (event["command"], event["outcome"], event["exit_code"], event["error"]) == ("ask", "failed", 4,
                                                                                       "IndexNotFound")


def test_json_documents_carry_the_run_id(workdir: Path) -> None:
    index = cli(["index", "docs", "--json"], workdir)
    assert index.exit_code == 0 and json.loads(index.stdout)["run_id"] == observe.run_id()
    ask = cli(["ask", QUESTION, "--retrieve-only", "--json"], workdir)
    assert ask.exit_code == 0 and json.loads(ask.stdout)["run_id"] == observe.run_id()


def test_logging_is_set_per_invocation_and_undone(indexed: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    cli(["--log-format", "json", "-v", "config"], indexed)
    assert root.handlers == before and logging.getLogger("rag_cli").level == logging.NOTSET


def test_serve_reports_timings_per_request(indexed: Path, caplog: pytest.LogCaptureFixture) -> None:
    from rag_cli.serve import client
    from rag_cli.serve.backend import Backend
    from rag_cli.serve.server import Server
    from rag_cli.testing.fakes import ScriptedGenerator

    settings = load_settings(indexed, env={})
    caplog.set_level(logging.INFO, logger="rag_cli.timings")
    server = Server(settings, Backend(settings, generators={"bundled": ScriptedGenerator("Every day [1].")}),
                    on_event=lambda _: None)
    server.open()
    server.start()
    server.load()
    try:
        for retrieve_only in (True, False):
            got = client.ask_served(settings, QUESTION, where=[], model=None, retrieve_only=retrieve_only,
                                    use_cache=False)
            assert got is not None
    finally:
        server.close(grace=10)
    events = [r.rag_event for r in caplog.records if getattr(r, "rag_event", None)]
    assert [(e["command"], e["label"]) for e in events] == [("serve", "ask"), ("serve", "ask")]
    assert {"wait", "embed", "retrieve", "total"} <= set(events[0]["stages"])
    assert {"generate", "load"} <= set(events[1]["stages"])


def test_run_ids_differ_between_processes_and_match_within_one(indexed: Path) -> None:
    runs = [subprocess.run([*RAG, "--log-format", "json", "ask", QUESTION, "--retrieve-only", "--json"],
                           cwd=indexed, env=process_env(RAG_NO_SERVE="1"), capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    ids = []
    for run in runs:
        assert run.returncode == 0, run.stderr
        records = json_lines(run.stderr)
        assert {r["run_id"] for r in records} == {json.loads(run.stdout)["run_id"]}
        ids.append(records[0]["run_id"])
    assert ids[0] != ids[1] and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


# -- spans, in-process ------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    """Spans recorded in memory (our own provider, as OTEL_EXPORTER_OTLP_ENDPOINT would make)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observe.use_provider(provider)
    try:
        yield exporter
    finally:
        observe.use_provider(None)


def tree(finished: Any) -> dict[str, Any]:
    """{name: span} (the last of each name), checked to be one trace whose parents are known."""
    by_id = {s.context.span_id: s for s in finished}
    roots = [s for s in finished if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    for s in finished:
        assert s.context.trace_id == roots[0].context.trace_id, s.name
        assert s.parent is None or s.parent.span_id in by_id, f"{s.name}: parent not recorded"
    return {s.name: s for s in finished}


def parent_name(named: dict[str, Any], name: str) -> str:
    by_id = {s.context.span_id: s for s in named.values()}
    return by_id[named[name].parent.span_id].name


def test_index_spans_per_stage_not_per_chunk(spans: Any, workdir: Path) -> None:
    result = cli(["index", "docs"], workdir)
    assert result.exit_code == 0, result.output
    finished = spans.get_finished_spans()
    named = tree(finished)
    root = named["rag index"]
    assert root.attributes["rag.run_id"] == observe.run_id() and root.attributes["rag.command"] == "index"
    assert {"index.walk", "index.read", "index.open", "index.group", "index.keyword"} <= set(named)  # model: hash
    assert parent_name(named, "index.read") == "rag index"  # the reader thread's span joins the run's trace
    assert parent_name(named, "index.open") == "rag index"  # a new index: opened to be reset, before any group
    group = named["index.group"]
    assert group.attributes["rag.chunks"] > 0 and group.attributes["rag.embed_seconds"] > 0
    assert "rag.timings.embed" in root.attributes  # the timings, on the root span too
    assert len(finished) < 20  # per run and per group, not per file or chunk


def test_a_failed_command_s_span_has_the_error_status(spans: Any, indexed: Path) -> None:
    from opentelemetry.trace import StatusCode

    spans.clear()  # the spans of indexing
    result = cli(["chunk-preview", "missing.txt"], indexed)
    assert result.exit_code == 2
    root = tree(spans.get_finished_spans())["rag chunk-preview"]
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["rag.exit_code"] == 2 and root.attributes["rag.error"] == "InputError"
    assert root.attributes["rag.timings.total"] > 0


def test_ask_and_eval_spans(spans: Any, indexed: Path) -> None:
    from rag_cli.ask import Asker
    from rag_cli.evaluate.dataset import load_questions
    from rag_cli.evaluate.runner import run_eval
    from rag_cli.testing.fakes import ScriptedGenerator

    spans.clear()  # the spans of indexing
    result = cli(["ask", QUESTION, "--retrieve-only"], indexed)
    assert result.exit_code == 0, result.output
    named = tree(spans.get_finished_spans())
    assert named["rag ask"].attributes["rag.run_id"] == observe.run_id()
    assert parent_name(named, "ask") == "rag ask" and parent_name(named, "search") == "ask"
    for stage in ("search.embed", "search.dense", "search.keyword", "search.fusion"):
        assert parent_name(named, stage) == "search"
    spans.clear()

    settings = load_settings(indexed, env={})
    answer = Asker(settings, generators={"bundled": ScriptedGenerator("Feed it every day [1].")}).ask(
        QUESTION, use_cache=False)
    named = tree(spans.get_finished_spans())
    assert named["ask"].attributes["rag.run_id"] == observe.run_id()  # a root: it carries the run id
    assert {"ask.load", "ask.generate"} <= set(named)
    assert ("ask.narrow" in named) == ("narrow" in answer.timings)
    assert named["ask.generate"].attributes["rag.completion_tokens"] == answer.completion_tokens
    spans.clear()

    run_eval(settings, load_questions(indexed / "q.jsonl"), retrieval_only=True)
    finished = spans.get_finished_spans()
    questions = [s for s in finished if s.name == "eval.question"]
    assert [s.attributes["rag.id"] for s in questions] == ["q0", "q1", "q2"]
    searches = [s for s in finished if s.name == "search"]
    assert {s.parent.span_id for s in searches} == {s.context.span_id for s in questions}


def test_a_served_request_joins_the_trace_of_the_rag_ask_that_sent_it(spans: Any, indexed: Path) -> None:
    from rag_cli.serve import client
    from rag_cli.serve.backend import Backend
    from rag_cli.serve.server import Server

    settings = load_settings(indexed, env={})
    server = Server(settings, Backend(settings), on_event=lambda _: None)
    server.open()
    server.start()
    server.load()
    spans.clear()
    try:
        with observe.span("rag ask", command="ask"):
            assert client.ask_served(settings, QUESTION, where=[], model=None, retrieve_only=True,
                                     use_cache=False) is not None
        assert observe.trace_carrier() == {}  # outside any span: nothing to send
    finally:
        server.close(grace=10)
    finished = spans.get_finished_spans()
    (sent,) = [s for s in finished if s.name == "rag ask"]
    (served,) = [s for s in finished if s.name == "serve.request"]
    assert served.context.trace_id == sent.context.trace_id and served.parent.span_id == sent.context.span_id
    assert served.parent.is_remote and served.attributes["rag.client_run_id"] == observe.run_id()
    assert {s.name for s in finished if s.parent and s.parent.span_id == served.context.span_id} == {"ask"}


def test_a_malformed_trace_carrier_starts_a_root_span(spans: Any) -> None:
    spans.clear()
    with observe.span("serve.request", remote_parent={"traceparent": "not-a-trace"}, op="ask"):
        pass
    with observe.span("serve.request", remote_parent={"traceparent": 7}, op="ask"):  # type: ignore[dict-item]
        pass
    finished = spans.get_finished_spans()
    assert len(finished) == 2 and all(s.parent is None and s.attributes["rag.run_id"] for s in finished)


def test_our_provider_and_the_global_one_leave_each_other_alone(spans: Any) -> None:
    """chromadb (CHROMA_OTEL_*) sets the global tracer provider; ours is private. Each keeps its
    spans, and spans of the global provider started inside ours nest under them."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        global_exporter = None  # set by an earlier test in this process: only check ours
    else:
        global_exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(global_exporter))
        trace.set_tracer_provider(provider)  # what chromadb's otel_init does
    with observe.span("outer") as outer:
        with trace.get_tracer("chromadb").start_as_current_span("chroma.query"):
            with observe.span("inner"):
                pass
    assert trace.get_tracer_provider() is not observe._provider
    ours = {s.name: s for s in spans.get_finished_spans()}
    assert set(ours) == {"outer", "inner"}
    if global_exporter is not None:
        (theirs,) = global_exporter.get_finished_spans()
        assert theirs.parent.span_id == outer.get_span_context().span_id
        assert ours["inner"].parent.span_id == theirs.context.span_id


def test_tracing_off_is_a_shared_no_op() -> None:
    assert not observe.tracing()
    first, second = observe.span("a", x=1), observe.span("b")
    assert first is second
    with first as s:
        s.set_attribute("k", "v")  # accepted, ignored
    fn = len
    assert observe.carried(fn) is fn


# -- subprocesses: no import when off, real collectors when on -------------------------------------


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "OTEL_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **extra}


def imported(args: list[str], cwd: Path, **env: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "rag_cli", *args], cwd=cwd,
                            env=process_env(**env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.slow
def test_opentelemetry_is_not_imported_unless_configured(indexed: Path) -> None:
    for args in (["--help"], ["config"], ["-v", "chunk-preview", str(FAQ)]):
        modules = imported(args, indexed)
        assert "rag_cli.cli.app" in modules  # the log was read right
        assert not any(m.startswith("opentelemetry") for m in modules), args
    on = imported(["config"], indexed, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    assert "opentelemetry.sdk.trace" in on


class Collected:
    """Spans a local collector received: name, ids, attributes, resource."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()

    def add(self, request: Any) -> None:
        with self.lock:
            self.requests += 1
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({"name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                           "parent": s.parent_span_id.hex(), "resource": resource,
                                           "attributes": {a.key: _value(a.value) for a in s.attributes}})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@contextmanager
def http_collector() -> Iterator[tuple[str, Collected]]:
    """An OTLP/HTTP receiver (protobuf POSTs to /v1/traces) on 127.0.0.1."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    collected = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                collected.add(ExportTraceServiceRequest.FromString(body))
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", collected
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def grpc_collector() -> Iterator[tuple[str, Collected]]:
    """An OTLP/gRPC receiver on 127.0.0.1."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    collected = Collected()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            collected.add(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", collected
    finally:
        server.stop(grace=None)


COLLECTORS = {"http/protobuf": http_collector, "grpc": grpc_collector}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(COLLECTORS))
def test_spans_reach_a_local_collector(protocol: str, workdir: Path) -> None:
    with COLLECTORS[protocol]() as (endpoint, collected):
        env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                          RAG_NO_SERVE="1")
        runs = {}
        for name, args in (("index", ["index", "docs", "--json"]), ("ask", ["ask", QUESTION, "--retrieve-only",
                                                                             "--json"])):
            run = subprocess.run([*RAG, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=180)
            assert run.returncode == 0, run.stderr
            assert run.stderr == ""  # a live collector: not a word about telemetry
            runs[name] = json.loads(run.stdout)["run_id"]
        for name in ("index", "ask"):  # every span was sent before the command returned
            (root,) = collected.named(f"rag {name}")
            assert root["attributes"]["rag.run_id"] == runs[name] and root["parent"] == ""
            assert root["resource"]["service.name"] == "rag-cli"
    names = {s["name"] for s in collected.spans}
    assert {"index.walk", "index.read", "index.group", "index.keyword", "ask", "search", "search.dense",
            "search.keyword", "search.fusion"} <= names
    (ask_root,) = collected.named("rag ask")
    (search,) = collected.named("search")
    assert search["trace_id"] == ask_root["trace_id"]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(COLLECTORS))
def test_a_dead_collector_does_not_hold_a_command_up(protocol: str, indexed: Path) -> None:
    env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
                      OTEL_EXPORTER_OTLP_PROTOCOL=protocol, RAG_NO_SERVE="1")
    started = time.perf_counter()
    run = subprocess.run([*RAG, "ask", QUESTION, "--retrieve-only"], cwd=indexed, env=env, capture_output=True,
                         text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert run.returncode == 0, run.stderr
    assert "[1]" in run.stdout
    assert elapsed < 30, f"{elapsed:.1f} s"  # a hang guard: the flush gives up after observe.FLUSH_SECONDS


@pytest.mark.slow
def test_a_bad_protocol_warns_once_and_the_command_works(indexed: Path) -> None:
    env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
                      RAG_NO_SERVE="1")
    run = subprocess.run([*RAG, "ask", QUESTION, "--retrieve-only"], cwd=indexed, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("OpenTelemetry tracing is off") == 1 and "http/json" in run.stderr


@pytest.mark.slow
def test_served_requests_log_json_timings(indexed: Path) -> None:
    from rag_cli.serve import client

    settings = load_settings(indexed, env={})
    proc = subprocess.Popen([*RAG, "--log-format", "json", "serve", "--no-llm"], cwd=indexed, env=process_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not client.status(settings).ready:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "rag serve did not get ready"
            time.sleep(0.1)
        asked = subprocess.run([*RAG, "ask", QUESTION, "--retrieve-only", "--json"], cwd=indexed, env=process_env(),
                               capture_output=True, text=True, timeout=120)
        assert asked.returncode == 0, asked.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    records = json_lines(err)
    assert len({r["run_id"] for r in records}) == 1
    assert any(r["logger"] == "rag_cli.cli" and r["msg"].startswith("rag serve: listening") for r in records)
    served = [r for r in records if r.get("event") == "timings" and r["command"] == "serve"]
    assert len(served) == 1 and served[0]["label"] == "ask" and "wait" in served[0]["stages"]
