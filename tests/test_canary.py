"""The crash canary for llama.cpp: a test decode in a child process picks load settings that do not
crash, records them, and turns a crash of every setting into a clean error; native crashes name
their stage. Children that die by a real SIGSEGV stand in for a CPU where llama.cpp faults."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_cli.generate import canary, llama
from rag_cli.generate.llama import LlamaCppGenerator
from rag_cli.model_files import resolve_gguf
from rag_cli.testing import crashing_canary
from tests.conftest import REPO, SAMPLES
from tests.indexing_helpers import invoke

QUESTION = "How often should I feed my starter?"
NO_AMX = "CPU : AVX2 = 1 |"  # the report of a CPU where both extra-buffer settings are tried


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own, so that its records start empty."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RAG_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def smollm2() -> str:
    return resolve_gguf("smollm2")  # in site-packages: no assembly into the (per-test) cache


def records(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cache / "llama-canary").glob("*.json"))]


def test_candidates_follow_the_setting_and_amx() -> None:
    plain = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | REPACK = 1 |"
    amx = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    assert canary.candidates("auto", plain) == [True, False]
    assert canary.candidates("auto", amx) == [False]  # llama.cpp #20824: never try its AMX buffers
    assert canary.candidates("on", amx) == [True] and canary.candidates("off", plain) == [False]
    assert canary.reports_amx(amx) and not canary.reports_amx(plain)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bundled", "smollm2"])
def test_the_bundled_models_decode_in_a_child_process(model: str) -> None:
    """A real decode on this machine's CPU with the settings `rag ask` would choose. If llama.cpp
    crashes here, users of this build crash too: the message says so."""
    path = resolve_gguf(model)
    for extra in canary.candidates("auto", canary.system_info()):
        found = canary.probe(path, extra_buffers=extra, threads=2)
        assert found.outcome != "crashed", (
            f"llama.cpp crashed ({found.signal}) decoding {Path(path).name} with {found.settings} on this CPU "
            f"({canary.system_info()}): {found.detail}")
        assert found.outcome == "ok", found.detail
        assert found.data["completion_tokens"] >= 1 and found.data["decode_seconds"] > 0


@pytest.mark.slow
def test_a_crash_with_extra_buffers_falls_back_and_is_recorded(cache: Path, smollm2: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canary, "child_command", crashing_canary.command_for("on"))
    monkeypatch.setattr(canary, "system_info", lambda: NO_AMX)  # no AMX: both candidates
    chosen = canary.plan(smollm2, mode="auto", threads=2)
    assert chosen.extra_buffers is False and chosen.fell_back
    crashed, ok = chosen.probes
    assert (crashed.outcome, crashed.signal, crashed.extra_buffers) == ("crashed", "SIGSEGV", True)
    assert "Segmentation fault" in crashed.detail  # the child's faulthandler dump, kept for the log
    assert ok.outcome == "ok" and not ok.cached
    assert sorted(r["outcome"] for r in records(cache)) == ["crashed", "ok"]

    def no_child(*args, **kwargs):
        raise AssertionError("a recorded outcome must not be tested again")

    again = canary.plan(smollm2, mode="auto", threads=2, run=no_child)
    assert again.extra_buffers is False and all(p.cached for p in again.probes)
    # Another setting is another combination: tested on its own.
    forced_off = canary.plan(smollm2, mode="off", threads=1)
    assert forced_off.extra_buffers is False and not forced_off.probes[0].cached


@pytest.mark.slow
def test_every_setting_crashing_is_a_model_error(cache: Path, smollm2: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canary, "child_command", crashing_canary.command_for("all"))
    monkeypatch.setattr(canary, "system_info", lambda: NO_AMX)
    with pytest.raises(canary.ModelCrashed) as caught:
        canary.plan(smollm2, mode="auto", threads=2)
    error = caught.value
    assert error.exit_code == 5
    assert "llama.cpp crashed (SIGSEGV)" in error.message and "extra buffer types on and extra buffer types off" \
        in error.message
    assert "run `rag doctor`" in error.message and "GGML_NATIVE=OFF" in (error.hint or "")
    with pytest.raises(canary.ModelCrashed):  # recorded: raised again without a child
        canary.plan(smollm2, mode="auto", threads=2, run=lambda *a, **k: pytest.fail("tested again"))
    with pytest.raises(canary.ModelCrashed) as forced:
        canary.plan(smollm2, mode="on", threads=2)
    assert "llm.extra_buffers = auto" in (forced.value.hint or "")


def test_a_child_that_fails_without_crashing_decides_nothing(cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canary, "system_info", lambda: NO_AMX)  # extra buffers on is the first candidate
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)  # passes the header check, not the load
    chosen = canary.plan(str(bad), mode="auto", threads=1)
    assert chosen.extra_buffers is True and chosen.probes[0].outcome == "failed"
    assert records(cache) == []  # tested again next time
    generator = LlamaCppGenerator(str(bad))
    with pytest.raises(Exception) as caught:  # the in-process load says what is wrong, as before
        generator.warm_up()
    assert "cannot load model" in str(caught.value)


@pytest.mark.slow
def test_the_generator_loads_with_the_settings_the_canary_chose(cache: Path, smollm2: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canary, "child_command", crashing_canary.command_for("on"))
    monkeypatch.setattr(canary, "system_info", lambda: NO_AMX)
    generator = LlamaCppGenerator(smollm2, threads=2)
    out = generator.generate([{"role": "user", "content": "Say yes."}], max_tokens=4, temperature=0.0)
    assert generator.load_plan is not None and generator.load_plan.extra_buffers is False
    assert generator._llm.model_params.use_extra_bufts is False and out.completion_tokens >= 1
    with pytest.raises(canary.ModelCrashed):  # forced on, where the record says it crashes
        LlamaCppGenerator(smollm2, threads=2, extra_buffers="on").warm_up()


@pytest.mark.slow
def test_extra_buffers_on_leaves_llama_cpp_default_untouched(cache: Path, smollm2: str) -> None:
    if canary.reports_amx(canary.system_info()):  # asked here, not at collection: it loads llama.cpp
        # Where the CPU reports AMX, llama.cpp's extra buffer types (its AMX kernels) really crash
        # (llama.cpp #20824): a model cannot be loaded with them on in this process.
        pytest.skip("this CPU reports AMX: llama.cpp's extra buffer types crash on it (#20824)")
    default = LlamaCppGenerator(smollm2, threads=1, extra_buffers="on")  # the real test decode
    default.warm_up()
    assert default._llm.model_params.use_extra_bufts is True  # llama.cpp's own default, untouched


@pytest.mark.slow
def test_what_other_threads_print_while_a_model_loads_is_kept(cache: Path, smollm2: str,
                                                              capfd: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """llama-cpp-python points the process's stdout and stderr at /dev/null while it loads a model
    (verbose=False); `rag -v ask` loads beside retrieval, whose log lines must still be seen.
    llama.cpp's own lines of reading the file stay below DEBUG, as hidden from -v as they were."""
    caplog.set_level(llama.LOAD_LOG_LEVEL, logger=llama.__name__)
    generator = LlamaCppGenerator(smollm2, threads=2)
    generator.start_warm_up()
    assert generator._loading is not None
    written = 0
    while generator._loading.is_alive():
        os.write(2, f"fd line {written}\n".encode())
        sys.stderr.write(f"sys line {written}\n")
        sys.stderr.flush()
        written += 1
        time.sleep(0.001)
    generator.warm_up()
    err = capfd.readouterr().err
    assert written > 0 and all(f"fd line {n}\n" in err and f"sys line {n}\n" in err for n in range(written))
    from llama_cpp import _internals, llama as llama_module
    from llama_cpp._utils import suppress_stdout_stderr

    # the binding's own redirect is back once the load is done
    assert llama_module.suppress_stdout_stderr is suppress_stdout_stderr is _internals.suppress_stdout_stderr
    levels = {r.levelno for r in caplog.records if "llama_model_loader" in r.getMessage()}
    assert levels == {llama.LOAD_LOG_LEVEL}  # reading the file
    assert any(r.levelno == logging.DEBUG and "llama_context" in r.getMessage() for r in caplog.records)


# -- the CLI: rag ask and rag doctor ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("canary-index")
    shutil.copytree(SAMPLES, work / "docs")
    assert invoke(["index", "docs"], work).exit_code == 0
    return work


def _rag(work: Path, cache: Path, when: str, *args: str, cpu: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_EMBEDDING_BACKEND="hash", RAG_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1",
               RAG_RETRIEVAL_MIN_SCORE="0", RAG_LLM_MODEL="smollm2")
    as_on = ["--cpu", cpu] if cpu else []
    return subprocess.run([sys.executable, "-m", "rag_cli.testing.crashing_canary", "--rag", when, *as_on, "--", *args],
                          capture_output=True, text=True, cwd=work, env=env, timeout=300)


@pytest.mark.slow
def test_rag_ask_answers_after_a_crash_with_extra_buffers(indexed: Path, cache: Path) -> None:
    done = _rag(indexed, cache, "on", "ask", "--json", "--no-cache", QUESTION, cpu=NO_AMX)
    assert done.returncode in (0, 6), done.stderr
    answer = json.loads(done.stdout)
    assert answer["error"] is None and answer["answer"]
    assert "crashed (SIGSEGV)" in done.stderr and "trying them off" in done.stderr  # said once, on stderr


@pytest.mark.slow
def test_rag_ask_degrades_when_every_setting_crashes(indexed: Path, cache: Path) -> None:
    done = _rag(indexed, cache, "all", "ask", "--no-cache", QUESTION)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "llama.cpp crashed (SIGSEGV)" in done.stderr and "rag doctor" in done.stderr
    assert "starter" in done.stdout.lower()  # the passages are shown instead
    assert "Segmentation fault" not in done.stdout
    data = json.loads(_rag(indexed, cache, "all", "ask", "--json", "--no-cache", QUESTION).stdout)
    assert data["error_code"] == 5 and "crashed" in data["error"] and data["passages"]


@pytest.mark.slow
def test_rag_doctor_tests_a_real_decode_and_reports_crashes(indexed: Path, cache: Path) -> None:
    ok = _rag(indexed, cache, "none", "doctor", "--json")
    llm = next(c for c in json.loads(ok.stdout)["checks"] if c["name"] == "language model")
    assert llm["status"] == "ok" and llm["data"]["probes"][0]["outcome"] == "ok", llm
    fell_back = _rag(indexed, cache, "on", "doctor", "--json", cpu=NO_AMX)  # tries them on first
    llm = next(c for c in json.loads(fell_back.stdout)["checks"] if c["name"] == "language model")
    assert llm["data"]["probes"][0]["extra_buffers"] is True
    assert llm["status"] == "ok" and "crashed (SIGSEGV)" in llm["detail"], llm
    assert llm["data"]["extra_buffers"] is False
    crashed = _rag(indexed, cache, "all", "doctor", "--json")
    assert crashed.returncode == 5
    llm = next(c for c in json.loads(crashed.stdout)["checks"] if c["name"] == "language model")
    assert llm["status"] == "fail" and "crashed (SIGSEGV)" in llm["detail"] and "GGML_NATIVE=OFF" in llm["fix"]


def test_a_native_crash_names_its_stage() -> None:
    code = ("import ctypes; from rag_cli import crash; crash.enable(); "
            "crash.in_stage('llama.cpp while generating an answer with x.gguf', ctypes.string_at, 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -11
    assert "rag-cli crashed in llama.cpp while generating an answer with x.gguf: run `rag doctor`" in done.stderr


def test_the_rag_command_enables_the_crash_report() -> None:
    code = "import faulthandler, sys; sys.argv = ['rag', '--version']; from rag_cli.cli.app import main\n" \
           "try:\n    main()\nexcept SystemExit:\n    pass\nprint(faulthandler.is_enabled())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip().endswith("True"), done.stdout + done.stderr
