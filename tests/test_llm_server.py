"""llm.url: answers streamed from an OpenAI-compatible server, with timeouts, retries, a circuit
breaker, and `rag ask` degrading to the passages (exit code 9) when the server is not there.

Unit tests script a tiny HTTP server in a thread (tests/fake_llm_server.py); end-to-end tests
start a real `python -m llama_cpp.server` with the bundled GGUF. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from rag_cli.ask import Asker
from rag_cli.errors import ExitCode, GenerationError, GeneratorUnavailable
from rag_cli.generate.breaker import CLOSED, OPEN, breaker_path
from rag_cli.generate.openai_server import OpenAIServerGenerator, estimate_tokens, is_local_model
from rag_cli.indexer import index_paths
from tests.fake_llm_server import Action, FakeLlmServer, chat_chunks, free_port
from tests.indexing_helpers import invoke as cli, settings_in

QUESTION = "How often should I feed my starter?"
MESSAGES = [{"role": "system", "content": "Answer from the sources."}, {"role": "user", "content": "When?"}]
RAG = Path(sys.executable).parent / "rag"  # the installed console script


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Breaker files of the unit tests go to this test's own cache (the E2E tests override it)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache))
    return cache


def generator(url: str, **kw) -> OpenAIServerGenerator:
    options = dict(connect_timeout=1.0, timeout=2.0, retries=2, breaker_failures=0, backoff=0.01)
    return OpenAIServerGenerator(url, **{**options, **kw})


def generate(gen: OpenAIServerGenerator, pieces: list[str] | None = None, messages=MESSAGES):
    return gen.generate(messages, max_tokens=16, temperature=0.0,
                        on_text=pieces.append if pieces is not None else None)


# -- streaming ------------------------------------------------------------------------------------

def test_chat_deltas_stream_to_on_text_and_the_usage_is_the_servers() -> None:
    usage = {"prompt_tokens": 42, "completion_tokens": 3}
    with FakeLlmServer(Action(chunks=chat_chunks("Feed it", " once", " a day [1].", usage=usage))) as server:
        pieces: list[str] = []
        gen = generator(server.url)  # model "" / "bundled": the server's own model is asked for
        result = generate(gen, pieces)
    assert pieces == ["Feed it", " once", " a day [1]."] and result.text == "Feed it once a day [1]."
    assert (result.prompt_tokens, result.completion_tokens, result.model) == (42, 3, "fake-model")
    (request,) = server.completions()
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == MESSAGES and body["model"] == "fake-model" and body["max_tokens"] == 16
    assert "Authorization" not in request["headers"]


def test_without_usage_tokens_are_counted_and_a_named_model_is_sent() -> None:
    with FakeLlmServer(Action(chunks=chat_chunks("Every", " day.")), tokenize=True) as server:
        result = generate(generator(server.url, model="qwen2.5-7b-instruct"))
    assert server.completions()[0]["body"]["model"] == "qwen2.5-7b-instruct"
    assert result.completion_tokens == 2  # the server's /tokenize: one token per word here
    assert result.prompt_tokens == sum(len(m["content"].split()) for m in MESSAGES)
    for local in ("bundled", "smollm2", "gemma-270m", "models/x.gguf", "hf:org/repo/x.gguf", ""):
        assert is_local_model(local)
    assert not is_local_model("gpt-4o-mini")


def test_tokens_are_counted_by_the_server_or_estimated_and_its_window_is_respected() -> None:
    with FakeLlmServer(tokenize=True, props={"default_generation_settings": {"n_ctx": 1024}}) as server:
        gen = generator(server.url, context_size=2048)
        assert gen.count_tokens("one two three four") == estimate_tokens("one two three four")  # before warm-up
        assert server.requests == []  # nothing touched the network yet (a cheap constructor)
        gen.warm_up()
        assert gen.count_tokens("one two three four") == 4 and gen.context_size == 1024
    with FakeLlmServer() as server:  # no /tokenize, /extras/tokenize or /props: estimated
        gen = generator(server.url)
        gen.warm_up()
        assert gen.count_tokens("x" * 30) == 10 and gen.context_size == 2048
        asked = len(server.requests)
        gen.count_tokens("again")
        assert len(server.requests) == asked  # a server that cannot count is not asked again
    assert estimate_tokens("déjà vu " * 10) >= len("déjà vu " * 10) / 4


def test_a_completion_prompt_goes_to_completions_and_keeps_the_first_line() -> None:
    chunks = [{"model": "base", "choices": [{"index": 0, "text": t}]} for t in ("\n", " Every", " day.\nMore", " text")]
    with FakeLlmServer(Action(chunks=chunks)) as server:
        pieces: list[str] = []
        gen = generator(server.url, style="completion")
        result = generate(gen, pieces, messages=[{"role": "prompt", "content": "Sources ... Short answer:"}])
    assert gen.style == "completion" and result.text == "Every day." and "".join(pieces) == "Every day."
    (request,) = server.completions()
    assert request["path"] == "/v1/completions" and request["body"]["prompt"].endswith("Short answer:")


def test_a_server_that_ignores_stream_answers_in_one_piece() -> None:
    answer = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "Daily [1]."},
                                         "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    with FakeLlmServer(Action("status", status=200, body=answer)) as server:
        pieces: list[str] = []
        result = generate(generator(server.url), pieces)
    assert pieces == ["Daily [1]."] and result.completion_tokens == 4 and result.model == "m"


# -- failures, retries, timeouts -------------------------------------------------------------------

def test_503_and_429_are_retried_with_backoff_then_the_answer_streams_once() -> None:
    busy = Action("status", status=503, body={"error": {"message": "Loading model"}})
    limited = Action("status", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"})
    with FakeLlmServer(busy, limited, Action(chunks=chat_chunks("Daily."))) as server:
        pieces: list[str] = []
        started = time.perf_counter()
        result = generate(generator(server.url, backoff=0.05), pieces)
        elapsed = time.perf_counter() - started
    assert result.text == "Daily." and pieces == ["Daily."]
    assert len(server.completions()) == 3
    assert elapsed >= 0.3  # the backoff, raised to the server's Retry-After


def test_retries_are_bounded_and_then_the_server_is_unavailable() -> None:
    with FakeLlmServer(Action("status", status=503, body={"error": {"message": "no slot"}})) as server:
        with pytest.raises(GeneratorUnavailable) as caught:
            generate(generator(server.url, retries=2))
    assert len(server.completions()) == 3 and caught.value.exit_code == ExitCode.LLM_UNAVAILABLE == 9
    assert server.url in caught.value.message and "no slot" in caught.value.message


def test_no_retry_once_text_has_streamed() -> None:
    cut = Action(chunks=chat_chunks("Feed it", " daily")[:2], done=False)  # the connection closes mid-answer
    with FakeLlmServer(cut, Action(chunks=chat_chunks("never sent"))) as server:
        pieces: list[str] = []
        with pytest.raises(GeneratorUnavailable, match="in the middle"):
            generate(generator(server.url), pieces)
    assert pieces == ["Feed it"] and len(server.completions()) == 1
    stalled = Action(chunks=chat_chunks("Feed it")[:2], stall_after=5)
    with FakeLlmServer(stalled) as server:
        started = time.perf_counter()
        with pytest.raises(GeneratorUnavailable, match="no reply within 0.4 s"):
            generate(generator(server.url, timeout=0.4))
        assert time.perf_counter() - started < 3 and len(server.completions()) == 1


def test_a_rejected_request_is_a_clear_error_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "This model's maximum context length is 2048 tokens. However, you requested 3018 tokens"
    with FakeLlmServer(Action("status", status=400, body={"error": {"message": message}})) as server:
        with pytest.raises(GenerationError) as caught:
            generate(generator(server.url))
    error = caught.value
    assert not isinstance(error, GeneratorUnavailable) and error.exit_code == ExitCode.MODEL
    assert server.url in error.message and "HTTP 400" in error.message and message in error.message
    assert len(server.completions()) == 1
    with FakeLlmServer(Action("status", status=500, body={"detail": "boom"})) as server:
        with pytest.raises(GenerationError, match="boom"):
            generate(generator(server.url))
        assert len(server.completions()) == 1  # a server error is not retried either
    monkeypatch.setenv("RAG_LLM_API_KEY", "sekret-key-123")
    with FakeLlmServer(Action("status", status=401, body={"error": {"message": "Invalid API key"}})) as server:
        gen = generator(server.url)
        with pytest.raises(GenerationError) as caught:
            generate(gen)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sekret-key-123"
    shown = f"{caught.value.message} {caught.value.hint} {gen!r}"
    assert "Invalid API key" in shown and "RAG_LLM_API_KEY" in shown and "sekret" not in shown
    with FakeLlmServer(Action(chunks=["not an object"])) as server:
        with pytest.raises(GenerationError, match="not an OpenAI-style answer"):
            generate(generator(server.url))


def test_a_silent_server_times_out_and_so_does_one_that_only_pings() -> None:
    with FakeLlmServer(Action("stall", delay=5)) as server:
        started = time.perf_counter()
        with pytest.raises(GeneratorUnavailable, match="no reply within 0.4 s") as caught:
            generate(generator(server.url, timeout=0.4, retries=2))
        assert time.perf_counter() - started < 3
        assert len(server.completions()) == 1  # a server that took the request and stayed silent is not asked again
        assert "(1 attempt " in caught.value.message and "llm.timeout" in caught.value.hint
    with FakeLlmServer(Action("pings", delay=5)) as server:
        started = time.perf_counter()
        with pytest.raises(GeneratorUnavailable, match="no reply within"):
            generate(generator(server.url, timeout=0.4, retries=0))
        assert time.perf_counter() - started < 3


def test_nothing_listening_is_unavailable_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(GeneratorUnavailable, match="cannot connect"):
        generate(generator(url, retries=2))
    assert time.perf_counter() - started < 5


# -- the circuit breaker ---------------------------------------------------------------------------

def test_the_breaker_opens_fails_fast_persists_and_half_opens(_own_cache: Path) -> None:
    failing = Action("status", status=503, body={"error": {"message": "down"}})
    with FakeLlmServer(failing) as server:
        options = dict(retries=0, breaker_failures=2, breaker_cooldown=0.6)
        gen = generator(server.url, **options)
        for _ in range(2):
            with pytest.raises(GeneratorUnavailable, match="could not be reached"):
                generate(gen)
        assert gen.breaker.state() == OPEN and len(server.completions()) == 2
        seen = len(server.requests)
        with pytest.raises(GeneratorUnavailable, match="circuit breaker is open"):
            generate(gen)
        # a new generator (a new `rag ask` process) reads the same file: no request at all
        with pytest.raises(GeneratorUnavailable, match="circuit breaker is open"):
            generate(generator(server.url, **options))
        assert len(server.requests) == seen
        path = breaker_path(server.url.rstrip("/"))
        assert path.is_file() and _own_cache in path.parents
        assert json.loads(path.read_text())["failures"] == 2
        time.sleep(0.7)  # the cooldown: half-open, one trial; it fails and the breaker opens again
        with pytest.raises(GeneratorUnavailable, match="could not be reached"):
            generate(generator(server.url, **options))
        assert len(server.completions()) == 3
        with pytest.raises(GeneratorUnavailable, match="circuit breaker is open"):
            generate(generator(server.url, **options))
        time.sleep(0.7)
        server.actions = [Action(chunks=chat_chunks("Back."))]  # the server recovers: the trial closes it
        assert generate(generator(server.url, **options)).text == "Back."
        assert generator(server.url, **options).breaker.state() == CLOSED
        assert json.loads(path.read_text())["failures"] == 0


def test_a_server_that_lists_models_but_fails_every_answer_still_opens_the_breaker() -> None:
    with FakeLlmServer(Action("status", status=503, body={})) as server:
        options = dict(retries=0, breaker_failures=2, breaker_cooldown=60)
        for _ in range(2):  # two processes: each one's model list answers, its answer does not
            with pytest.raises(GeneratorUnavailable):
                generate(generator(server.url, **options))
        assert generator(server.url, **options).breaker.state() == OPEN


# -- through the Asker and the CLI -----------------------------------------------------------------

@pytest.fixture
def hash_index(tmp_path: Path, samples: Path):
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0, ask__min_support=0.0)
    index_paths(settings, [samples])
    return settings


def test_asker_answers_through_the_server_and_an_unavailable_one_is_not_cached(hash_index) -> None:
    with FakeLlmServer(Action(chunks=chat_chunks("Once every 24 hours [1]."))) as server:
        settings = hash_index.with_values({"llm.url": server.url}, "test")
        asker = Asker(settings)
        answer = asker.ask(QUESTION)
        assert isinstance(asker.generators["bundled"], OpenAIServerGenerator)
    assert answer.error is None and answer.model == "fake-model" and any(c.cited for c in answer.citations)
    dead = hash_index.with_values({"llm.url": f"http://127.0.0.1:{free_port()}/v1", "llm.retries": 0}, "test")
    first = Asker(dead).ask(QUESTION)
    assert first.error and "cannot connect" in first.error and first.error_code == ExitCode.LLM_UNAVAILABLE
    assert first.passages and first.answer == "" and first.to_dict()["error_code"] == 9
    again = Asker(dead).ask(QUESTION)
    assert not again.cached and again.error_code == 9
    assert type(first).from_dict(first.to_dict()).error_code == 9  # what `rag serve` sends back


def test_cli_prints_the_passages_and_exits_9_then_skips_the_dead_server(tmp_path: Path, samples: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    env = dict(RAG_LLM_URL=f"http://127.0.0.1:{free_port()}/v1", RAG_LLM_BREAKER_FAILURES="1",
               RAG_RETRIEVAL_MIN_SCORE="0")
    started = time.perf_counter()
    down = cli(["ask", QUESTION], tmp_path, **env)
    assert time.perf_counter() - started < 20  # a hang guard, not a speed test
    assert down.exit_code == ExitCode.LLM_UNAVAILABLE, down.output
    assert "no generated answer" in down.stderr and "[1]" in down.stdout and "starter" in down.stdout

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used while the breaker is open")

    monkeypatch.setattr(httpx.Client, "send", no_network)
    skipped = cli(["ask", QUESTION, "--json"], tmp_path, **env)
    assert skipped.exit_code == ExitCode.LLM_UNAVAILABLE, skipped.output
    data = json.loads(skipped.stdout)
    assert data["error_code"] == 9 and "circuit breaker" in data["error"] and data["passages"]


def test_eval_counts_answers_the_server_could_not_give(tmp_path: Path, samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "feed", "question": QUESTION, "answers": ["24 hours"],
                                     "relevant": ["guides/starter.md"], "answerable": True}) + "\n")
    result = cli(["eval", str(questions), "--json"], tmp_path, RAG_LLM_URL=f"http://127.0.0.1:{free_port()}/v1",
                 RAG_LLM_RETRIES="0", RAG_RETRIEVAL_MIN_SCORE="0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["errors"] == 1 and report["counts"]["unavailable"] == 1
    assert "could not be reached" in result.stderr


def test_rag_serve_answers_through_the_server_and_reports_it_unavailable(tmp_path: Path, samples: Path) -> None:
    from rag_cli.config import load_settings
    from rag_cli.serve import client
    from rag_cli.serve.backend import Backend
    from rag_cli.serve.server import Server

    (tmp_path / ".rag.toml").write_text('[embedding]\nbackend = "hash"\n\n[retrieval]\nmin_score = 0.0\n\n'
                                        '[ask]\nmin_support = 0.0\n')
    with FakeLlmServer(Action(chunks=chat_chunks("Every 24 hours [1]."))) as fake:
        settings = load_settings(tmp_path, env={}, flags={"llm.url": fake.url})
        index_paths(settings, [samples])
        server = Server(settings, Backend(settings), on_event=lambda _: None)
        server.open()
        server.start()
        server.load()  # the backend's warm-up: the model list of the fake server
        try:
            options = dict(where=[], model=None, retrieve_only=False, use_cache=False)
            answered = client.ask_served(settings, QUESTION, **options)
            assert answered is not None and answered.answer.model == "fake-model"
            assert answered.answer.error is None and fake.completions()
            dead = settings.with_values({"llm.url": f"http://127.0.0.1:{free_port()}/v1", "llm.retries": 0}, "test")
            down = client.ask_served(dead, QUESTION, **options)
            assert down is not None and down.answer.error_code == ExitCode.LLM_UNAVAILABLE and down.answer.passages
        finally:
            server.close(grace=10)


# -- a real llama.cpp server -----------------------------------------------------------------------

def start_llama_server(port: int, log: Path) -> subprocess.Popen:
    """`python -m llama_cpp.server` with the bundled GGUF on 127.0.0.1:port, answering /v1/models (started
    through rag_cli.testing.llama_server: loaded with the settings the crash canary chose).
    Its output goes to ``log`` (a pipe nobody reads would fill up with llama.cpp's load log)."""
    from rag_cli.model_files import resolve_gguf

    model = resolve_gguf("bundled")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rag_cli.testing.llama_server", "--model", model, "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("llama_cpp.server did not answer /v1/models within 90 s: "
                       f"{log.read_text(errors='replace')[-2000:]}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)  # its own session: the server and nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    proc = start_llama_server(port, tmp_path_factory.mktemp("llama-server") / "server.log")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(proc)


@pytest.fixture
def session_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's cache (conftest's XDG_CACHE_HOME), where Gemma is assembled once."""
    monkeypatch.delenv("RAG_CACHE_DIR")


@pytest.mark.slow
def test_rag_ask_answers_through_a_real_llama_cpp_server(session_cache, llama_server: str, tmp_path: Path,
                                                         samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    env = dict(RAG_LLM_URL=llama_server, RAG_RETRIEVAL_MIN_SCORE="0")
    # Gemma 3 270M base has no chat template: it continues the completion prompt, as in-process
    done = cli(["ask", QUESTION, "--json", "--no-cache"], tmp_path, RAG_LLM_PROMPT_STYLE="completion", **env)
    assert done.exit_code in (ExitCode.OK, ExitCode.REFUSED), done.output
    data = json.loads(done.stdout)
    assert data["model"] == "gemma-3-270m-q4_k_m.gguf" and data["error"] is None and data["error_code"] is None
    assert data["tokens"]["completion"] > 0 and data["sources"]
    if done.exit_code == ExitCode.OK:
        assert data["citations"] and "\n" not in data["answer"]
    chat = cli(["ask", QUESTION, "--json", "--no-cache"], tmp_path, **env)  # chat messages: the server's template
    assert chat.exit_code in (ExitCode.OK, ExitCode.REFUSED), chat.output
    data = json.loads(chat.stdout)
    assert data["model"] == "gemma-3-270m-q4_k_m.gguf" and data["error"] is None
    assert data["citations"] or data["refused"]
    breaker = breaker_path(llama_server)
    assert not breaker.exists() or json.loads(breaker.read_text())["failures"] == 0


@pytest.mark.slow
def test_the_installed_rag_command_with_a_live_and_a_dead_server(session_cache, llama_server: str, tmp_path: Path,
                                                                 samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAG_EMBEDDING_BACKEND": "hash", "RAG_RETRIEVAL_MIN_SCORE": "0",
           "RAG_LLM_PROMPT_STYLE": "completion"}
    live = subprocess.run([str(RAG), "ask", QUESTION, "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**env, "RAG_LLM_URL": llama_server})
    assert live.returncode in (ExitCode.OK, ExitCode.REFUSED), live.stderr
    assert json.loads(live.stdout)["model"] == "gemma-3-270m-q4_k_m.gguf"
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    dead = {**env, "RAG_LLM_URL": dead_url, "RAG_LLM_BREAKER_FAILURES": "1"}
    started = time.perf_counter()
    down = subprocess.run([str(RAG), "-v", "ask", QUESTION], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=dead)
    assert time.perf_counter() - started < 20  # a hang guard
    assert down.returncode == ExitCode.LLM_UNAVAILABLE, down.stderr
    assert dead_url in down.stderr and "retry 1 of 2" in down.stderr and "circuit breaker" in down.stderr
    assert "[1]" in down.stdout
    assert breaker_path(dead_url).is_file() and Path(os.environ["XDG_CACHE_HOME"]) in breaker_path(dead_url).parents
    skipped = subprocess.run([str(RAG), "-v", "ask", QUESTION], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env=dead)
    assert skipped.returncode == ExitCode.LLM_UNAVAILABLE and "circuit breaker is open" in skipped.stderr
    assert "retry" not in skipped.stderr  # no attempt at all


@pytest.mark.slow
def test_a_killed_server_degrades_to_the_passages(session_cache, tmp_path: Path, samples: Path) -> None:
    assert cli(["index", str(samples)], tmp_path).exit_code == 0
    port = free_port()
    proc = start_llama_server(port, tmp_path / "server.log")
    env = dict(RAG_LLM_URL=f"http://127.0.0.1:{port}/v1", RAG_RETRIEVAL_MIN_SCORE="0",
               RAG_LLM_PROMPT_STYLE="completion")
    try:
        assert cli(["ask", QUESTION, "--no-cache"], tmp_path, **env).exit_code in (ExitCode.OK, ExitCode.REFUSED)
    finally:
        stop_process(proc, signal.SIGKILL)
    started = time.perf_counter()
    down = cli(["ask", QUESTION, "--no-cache"], tmp_path, **env)
    assert time.perf_counter() - started < 20  # a hang guard
    assert down.exit_code == ExitCode.LLM_UNAVAILABLE, down.output
    assert "no generated answer" in down.stderr and "[1]" in down.stdout
