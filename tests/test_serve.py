"""`rag serve`: served answers equal in-process ones; the token, the file modes, back-pressure,
timeouts, stopping (requests in flight, SIGTERM, `--stop`), a killed server's leftovers, index
changes while serving, and `rag eval` through the server.

Fast tests run a Server on threads in this process over a hash-embedder index with a scripted
generator; the others run `rag serve` as a real process, over the same kind of index (`--no-llm`)
or over the samples indexed with the bundled MiniLM and answered by the bundled Gemma GGUF.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rag_cli.ask import Asker
from rag_cli.config import Settings, load_settings
from rag_cli.indexer import index_paths
from rag_cli.retrieve.filters import parse_where
from rag_cli.serve import client
from rag_cli.serve.backend import Backend
from rag_cli.serve.protocol import read_state, state_path, write_state
from rag_cli.serve.server import Server
from rag_cli.testing.fakes import ScriptedGenerator
from tests.conftest import REPO

QUESTION = "How often should I feed my starter?"
HASH_TOML = '[embedding]\nbackend = "hash"\n\n[retrieval]\nmin_score = 0.0\n\n[ask]\nmin_support = 0.0\n'


def without_timings(answer: Any) -> dict[str, Any]:
    data = answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)
    data.pop("timings")
    data.pop("run_id", None)  # `rag ask --json` documents carry their process's run id
    return data


@pytest.fixture
def hash_workdir(tmp_path: Path, samples: Path) -> Path:
    """A folder with a .rag.toml (hash embedder) and the samples indexed into its .rag/."""
    (tmp_path / ".rag.toml").write_text(HASH_TOML)
    index_paths(load_settings(tmp_path, env={}), [samples])
    return tmp_path


def settings_of(workdir: Path, **values: Any) -> Settings:
    return load_settings(workdir, env={}, flags={k.replace("__", "."): v for k, v in values.items()})


class SlowGenerator(ScriptedGenerator):
    """A scripted generator that takes ``seconds`` to answer."""

    def __init__(self, seconds: float) -> None:
        super().__init__("Feed it every 24 hours [1].")
        self.seconds = seconds

    def generate(self, messages, **kwargs):  # noqa: ANN001, ANN003
        time.sleep(self.seconds)
        return super().generate(messages, **kwargs)


@contextmanager
def thread_server(settings: Settings, generator: Any = None) -> Iterator[Server]:
    backend = Backend(settings, generators={"bundled": generator or ScriptedGenerator("Feed it every 24 hours [1].")})
    server = Server(settings, backend, on_event=lambda _: None)
    server.open()
    server.start()
    server.load()
    try:
        yield server
    finally:
        server.close(grace=10)


def ask_in_thread(settings: Settings, question: str = QUESTION) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def work() -> None:
        out["served"] = client.ask_served(settings, question, where=[], model=None, retrieve_only=False,
                                          use_cache=False)
    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def served(settings: Settings, question: str = QUESTION, **options: Any) -> client.Served | None:
    options = {"where": [], "model": None, "retrieve_only": False, "use_cache": False, **options}
    return client.ask_served(settings, question, **options)


# -- on threads, with fakes -------------------------------------------------------------------------

def test_served_answers_equal_in_process_ones(hash_workdir: Path) -> None:
    settings = settings_of(hash_workdir)
    reply = "Feed it every 24 hours [1]."
    with thread_server(settings, ScriptedGenerator(reply)) as server:
        local = Asker(settings, generators={"bundled": ScriptedGenerator(reply)})
        for variant, options in [(settings, {}), (settings, {"retrieve_only": True}),
                                 (settings_of(hash_workdir, retrieval__top_k=2), {}),
                                 (settings, {"where": ["path=guides/*"]})]:
            got = served(variant, **options)
            assert got is not None and got.pid == os.getpid()
            where = parse_where(options.pop("where", []))
            expected = Asker(variant, generators={"bundled": ScriptedGenerator(reply)}).ask(
                QUESTION, where=where, use_cache=False, **options)
            assert without_timings(got.answer) == without_timings(expected)
            assert options.get("retrieve_only") or got.answer.evidence  # the quotes came over the socket
        pieces: list[str] = []
        streamed = served(settings, on_text=pieces.append)
        local_pieces: list[str] = []
        local.ask(QUESTION, use_cache=False, on_text=local_pieces.append)
        assert streamed is not None and pieces == local_pieces and len(pieces) > 1
        status = server.status()
        assert status["requests"]["served"] == 5 and status["settings_variants"] == 2


def test_a_wrong_token_is_refused_and_the_files_are_private(hash_workdir: Path) -> None:
    settings = settings_of(hash_workdir)
    index_dir = settings.index_dir
    with thread_server(settings) as server:
        state = read_state(index_dir)
        assert state is not None and state["pid"] == os.getpid()
        sock = Path(state["socket"])
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        for path, mode in ((state_path(index_dir), 0o600), (sock, 0o600), (index_dir, 0o700)):
            assert stat.S_IMODE(os.lstat(path).st_mode) == mode, path
        with pytest.raises(client.Unavailable, match="wrong token"):
            client.exchange({**state, "token": "guess"}, "status", {}, client.Timeouts(1.0, 1.0))
        with socket.socket(socket.AF_UNIX) as raw:  # no token at all, then garbage
            raw.connect(str(sock))
            raw.sendall(b'{"protocol": 1, "op": "stop"}\n')
            assert json.loads(raw.recv(4096))["kind"] == "auth"
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(sock))
            raw.sendall(b"not json\n")
            assert raw.recv(4096) == b""
        assert server.status()["requests"]["refused"] == 2 and not server.stopping.is_set()
        assert client.status(settings).ready
    assert not state_path(index_dir).exists() and not sock.exists()
    assert client.status(settings).state == "not running"


def test_a_full_queue_and_a_long_wait_are_told_busy_quickly(hash_workdir: Path) -> None:
    settings = settings_of(hash_workdir, serve__queue_size=1, serve__wait_timeout=0.3)
    with thread_server(settings, SlowGenerator(1.5)) as server:
        first, first_out = ask_in_thread(settings)  # answered, slowly
        time.sleep(0.3)
        second, second_out = ask_in_thread(settings)  # waits for its turn, then is told busy
        time.sleep(0.1)
        t0 = time.perf_counter()
        assert served(settings) is None  # the queue is full: busy at once
        assert time.perf_counter() - t0 < 0.25
        t0 = time.perf_counter()
        second.join()
        assert second_out["served"] is None and time.perf_counter() - t0 < 0.5
        first.join()
        assert first_out["served"] is not None and "24 hours" in first_out["served"].answer.answer
        assert server.status()["requests"]["busy"] == 2 and server.status()["queue"]["pending"] == 0


def test_stopping_finishes_the_request_in_flight_and_turns_away_the_waiting(hash_workdir: Path) -> None:
    settings = settings_of(hash_workdir, serve__wait_timeout=10.0)
    with thread_server(settings, SlowGenerator(1.0)) as server:
        first, first_out = ask_in_thread(settings)
        time.sleep(0.3)
        second, second_out = ask_in_thread(settings)
        time.sleep(0.2)
        t0 = time.perf_counter()
        server.close(grace=10)
        first.join()
        second.join()
        assert first_out["served"] is not None and first_out["served"].answer.error is None
        assert second_out["served"] is None and time.perf_counter() - t0 < 2.0
        assert served(settings) is None  # the state file is gone: in-process from now on
    assert not state_path(settings.index_dir).exists()


def test_a_hung_or_foreign_server_never_holds_the_client(hash_workdir: Path) -> None:
    settings = settings_of(hash_workdir, serve__connect_timeout=0.3)
    index_dir = settings.index_dir
    sock_path = index_dir / "serve.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    listener.listen(8)  # accepts (the kernel does), never answers
    try:
        write_state(index_dir, {"pid": os.getpid(), "socket": str(sock_path), "token": "t"})
        t0 = time.perf_counter()
        assert served(settings, retrieve_only=True) is None
        assert time.perf_counter() - t0 < 1.0
        os.chmod(sock_path, 0o666)  # a socket others could have made: not trusted
        with pytest.raises(client.Unavailable, match="not a socket private"):
            client.exchange(read_state(index_dir) or {}, "ping", {}, client.Timeouts(0.3, 0.3))
        os.chmod(state_path(index_dir), 0o644)  # a state file others could read is ignored
        assert read_state(index_dir) is None
    finally:
        listener.close()


def test_settings_it_cannot_serve_and_the_opt_outs_go_in_process(hash_workdir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(hash_workdir)
    with thread_server(settings) as server:
        assert served(settings_of(hash_workdir, embedding__query_prefix="query: ")) is None  # other vectors
        assert served(settings_of(hash_workdir, serve__use="never")) is None
        monkeypatch.setenv("RAG_NO_SERVE", "1")
        assert served(settings) is None
        monkeypatch.delenv("RAG_NO_SERVE")
        assert served(settings_of(hash_workdir, llm__max_tokens=20)) is not None  # other answer settings: fine
        assert server.status()["requests"]["served"] == 1


# -- `rag serve` as a process ------------------------------------------------------------------------

def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **extra}


RAG = [sys.executable, "-m", "rag_cli"]


def start_serve(workdir: Path, *args: str, timeout: float = 180.0) -> subprocess.Popen:
    proc = subprocess.Popen([*RAG, "serve", *args], cwd=workdir, env=process_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    settings = settings_of(workdir)
    deadline = time.monotonic() + timeout
    while not client.status(settings).ready:
        if proc.poll() is not None:
            raise AssertionError(f"rag serve exited {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "rag serve did not get ready"
        time.sleep(0.1)
    return proc


def rag(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RAG, *args], cwd=workdir, env=process_env(**env), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_second_server_is_refused(hash_workdir: Path) -> None:
    proc = start_serve(hash_workdir, "--no-llm")
    settings = settings_of(hash_workdir)
    state = read_state(settings.index_dir)
    assert state is not None and state["pid"] == proc.pid
    try:
        second = rag(hash_workdir, "serve")
        assert second.returncode == 7 and f"pid {proc.pid}" in second.stderr
        via = rag(hash_workdir, "-v", "ask", QUESTION, "--retrieve-only", "--json")
        local = rag(hash_workdir, "ask", QUESTION, "--retrieve-only", "--json", RAG_NO_SERVE="1")
        assert via.returncode == local.returncode == 0, via.stderr
        assert f"answered by rag serve (pid {proc.pid})" in via.stderr
        assert without_timings(json.loads(via.stdout)) == without_timings(json.loads(local.stdout))
        status = rag(hash_workdir, "serve", "--status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["requests"]["served"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping (SIGTERM)" in err and "stopped" in err
    assert not state_path(settings.index_dir).exists() and not Path(state["socket"]).exists()


@pytest.mark.slow
def test_a_killed_servers_leftovers_are_ignored_then_cleaned(hash_workdir: Path) -> None:
    proc = start_serve(hash_workdir, "--no-llm")
    settings = settings_of(hash_workdir)
    state = read_state(settings.index_dir)
    assert state is not None
    proc.kill()
    proc.wait(timeout=30)
    assert state_path(settings.index_dir).exists() and Path(state["socket"]).exists()  # left behind
    status = rag(hash_workdir, "serve", "--status")
    assert status.returncode == 7 and status.stdout.startswith("stale:")
    asked = rag(hash_workdir, "ask", QUESTION, "--retrieve-only", "--json")
    assert asked.returncode == 0 and json.loads(asked.stdout)["passages"]  # answered in-process
    again = start_serve(hash_workdir, "--no-llm")  # a new server takes over the dead one's files
    stopped = rag(hash_workdir, "serve", "--stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped: pid {again.pid}")
    assert again.wait(timeout=30) == 0
    proc = subprocess.Popen(["sleep", "0"])  # a stale state file again, now removed by --stop
    proc.wait()
    write_state(settings.index_dir, {**state, "pid": proc.pid})
    cleaned = rag(hash_workdir, "serve", "--stop")
    assert cleaned.returncode == 0 and cleaned.stdout.startswith("removed the files"), cleaned.stdout
    assert not state_path(settings.index_dir).exists()


# -- the real models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_served(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Iterator[tuple[Path, Path]]:
    """The samples indexed with the bundled MiniLM, and `rag serve` (with Gemma) on them."""
    import shutil

    from tests.conftest import SAMPLES

    workdir = tmp_path_factory.mktemp("served")
    docs = workdir / "docs"
    shutil.copytree(SAMPLES, docs)
    index_paths(settings_of(workdir), [docs], embedder=real_embedder)
    proc = start_serve(workdir)
    try:
        yield workdir, docs
    finally:
        stopped = rag(workdir, "serve", "--stop", "--json")
        assert stopped.returncode == 0 and json.loads(stopped.stdout)["was"] == "ready"
        assert proc.wait(timeout=60) == 0


@pytest.mark.slow
def test_real_served_answers_equal_in_process_ones_and_import_nothing_heavy(real_served) -> None:
    workdir, _ = real_served
    settings = settings_of(workdir)
    asker = Asker(settings)  # as a fresh `rag ask` process builds it
    for options in ({"retrieve_only": True}, {}):
        got = served(settings, **options)
        assert got is not None
        assert without_timings(got.answer) == without_timings(asker.ask(QUESTION, use_cache=False, **options))
    assert "24 hours" in got.answer.answer and got.answer.model == "gemma-3-270m-q4_k_m.gguf"
    log = subprocess.run([*RAG, "ask", QUESTION, "--retrieve-only"], cwd=workdir, capture_output=True, text=True,
                         env=process_env(PYTHONPROFILEIMPORTTIME="1"), timeout=60)
    assert log.returncode == 0 and "starter" in log.stdout
    from tests.test_cli_basic import HEAVY, imported_modules

    modules = imported_modules(log.stderr)
    assert "rag_cli" in modules and not modules & {*HEAVY, "numpy", "onnxruntime"}, sorted(modules)


@pytest.mark.slow
def test_real_eval_goes_through_the_server(real_served, tmp_path: Path) -> None:
    from rag_cli.evaluate.dataset import load_questions
    from rag_cli.evaluate.runner import run_eval
    from rag_cli.serve.remote import remote_for

    workdir, _ = real_served
    settings = settings_of(workdir)
    rows = [{"id": "1", "question": QUESTION, "answers": ["once every 24 hours"], "relevant": ["guides/starter.md"]},
            {"id": "2", "question": "What temperature should the oven be?", "answers": ["250 °C"]}]
    questions_file = tmp_path / "q.jsonl"
    questions_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_questions(questions_file)
    before = client.status(settings).details["requests"]["served"]
    remote = remote_for(settings, retrieval_only=False)
    assert remote is not None
    report = run_eval(settings, questions[:1], searcher=remote[0], asker=remote[1])
    assert remote[0].session.fallback is None and report.counts.get("errors") == 0
    assert client.status(settings).details["requests"]["served"] - before == 2 + 2  # warm x2, search, ask
    assert "24 hours" in report.rows[0]["answer"] and "guides/starter.md" in report.rows[0]["citations"]
    remote = remote_for(settings, retrieval_only=True)
    assert remote is not None and remote[1] is None
    served_rows = run_eval(settings, questions, retrieval_only=True, searcher=remote[0]).rows
    local_rows = run_eval(settings, questions, retrieval_only=True).rows  # the in-process eval
    assert [{k: v for k, v in row.items() if k != "timings"} for row in served_rows] == \
        [{k: v for k, v in row.items() if k != "timings"} for row in local_rows]
    from tests.indexing_helpers import invoke

    result = invoke(["-v", "eval", str(questions_file), "--retrieval-only", "--json"], workdir,
                    RAG_EMBEDDING_BACKEND="sentence-transformers")
    assert result.exit_code == 0 and "answered by rag serve" in result.stderr
    assert json.loads(result.stdout)["metrics"]["hit@1"] == 1.0


@pytest.mark.slow
def test_an_index_run_while_serving_is_seen(real_served, real_embedder) -> None:
    workdir, docs = real_served
    settings = settings_of(workdir)
    question = "What does a zanzibar quokka eat for breakfast?"
    (docs / "quokka.md").write_text("# Quokka\n\nThe zanzibar quokka eats mango leaves for breakfast.\n")
    reopened = client.status(settings).details["index_reopened"]
    index_paths(settings, [docs], embedder=real_embedder)
    got = served(settings, question, retrieve_only=True)
    assert got is not None and got.answer.passages[0]["doc_id"] == "quokka.md"
    assert client.status(settings).details["index_reopened"] == reopened + 1
    assert without_timings(got.answer) == without_timings(Asker(settings).ask(question, retrieve_only=True))


def test_a_socket_path_too_long_for_af_unix_goes_to_a_private_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_cli.serve.protocol import socket_path

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    short = tmp_path / ".rag"
    assert socket_path(short) == short / "serve.sock"
    deep = tmp_path / ("d" * 120) / ".rag"
    path = socket_path(deep)
    assert path.parent == tmp_path / "rag-cli" and len(str(path).encode()) <= 107
    assert stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700 and path == socket_path(deep)
    os.chmod(path.parent, 0o755)  # opened to others: refused
    with pytest.raises(PermissionError):
        socket_path(deep)


def test_the_servers_log_of_a_request_names_the_clients_run(hash_workdir: Path, caplog) -> None:
    import logging

    from rag_cli import observe

    settings = settings_of(hash_workdir)
    with caplog.at_level(logging.INFO, logger=observe.TIMINGS_LOGGER), thread_server(settings):
        assert served(settings) is not None
    events = [r.rag_event for r in caplog.records if getattr(r, "rag_event", {}).get("command") == "serve"]
    assert events and events[-1]["client_run_id"] == observe.run_id()  # one process here: the same id
