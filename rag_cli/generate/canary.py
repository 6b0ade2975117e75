"""The crash canary: a test decode of a GGUF model in a child process before it is loaded here.

llama.cpp is native code built for the CPU it was compiled on, and some combinations of build,
CPU and load settings crash it on the first decode (a segfault in its AMX matrix kernels on
Sapphire/Granite Rapids class CPUs, llama.cpp #20824), which would kill `rag ask` without a word.
So the first time a combination of llama.cpp build, model file, CPU features and load settings is
used, a child process loads the model with those settings and decodes a short prompt and two
tokens (the batched and the one-token paths). If the child dies by a signal, the next candidate
settings are tried (the extra buffer types off); the outcome of each is recorded in
``$RAG_CACHE_DIR/llama-canary/`` so that later runs pay nothing but a file read.

An outcome that is not a crash (the child raised: a damaged file, too little memory; or it timed
out) is not recorded: the model is then loaded here as before and fails with its own message.

The child is ``python -m rag_cli.generate.canary SPEC``; it prints one JSON line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from rag_cli.errors import ModelLoadError
from rag_cli.model_files import cache_root

log = logging.getLogger(__name__)

PROTOCOL = 1  # bump when what the child tests changes: every combination is tested again
TIMEOUT = 180.0  # seconds for the child (a big model's first load from a cold disk)
CANARY_PROMPT = ("The sourdough starter is fed every twelve hours with equal weights of flour and water. "
                 "Before baking, it should double in size within six hours at room temperature, and a "
                 "spoonful of it should float in water. Question: how often is the starter fed? Answer:")
REBUILD = ("rebuild llama-cpp-python for a generic CPU: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install "
           "--force-reinstall --no-cache-dir llama-cpp-python; or serve the model with llama.cpp's "
           "llama-server and set llm.url")


class ModelCrashed(ModelLoadError):
    """Every load setting tried crashed llama.cpp in the test decode (exit code 5, as a model that
    will not load: `rag ask` shows the passages instead)."""


class Outcome(StrEnum):
    """How a test decode ended (recorded in the cache as these words)."""

    OK = "ok"
    CRASHED = "crashed"  # killed by a signal
    FAILED = "failed"  # the child raised, or printed no result
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Probe:
    """One test decode: ``outcome`` is ok, crashed (killed by ``signal``), failed or timeout."""

    extra_buffers: bool
    outcome: Outcome
    seconds: float
    signal: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    @property
    def settings(self) -> str:
        return f"extra buffer types {'on' if self.extra_buffers else 'off'}"


@dataclass(frozen=True)
class LoadPlan:
    """The load settings to use, and the probes (cached or run now) that chose them."""

    extra_buffers: bool
    probes: tuple[Probe, ...]

    @property
    def fell_back(self) -> bool:
        return any(p.outcome == Outcome.CRASHED for p in self.probes)


# -- the facts a record is keyed on -------------------------------------------------------------------
def system_info() -> str:
    """llama.cpp's own feature line (``AVX512 = 1 | AMX_INT8 = 1 | ...``): what the build uses."""
    import llama_cpp

    try:
        return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    except Exception:  # an older or newer binding without it
        return ""


def reports_amx(info: str) -> bool:
    return "AMX_INT8 = 1" in info or "AMX = 1" in info


def candidates(mode: str, info: str) -> list[bool]:
    """The extra-buffer settings to try, in order, for ``llm.extra_buffers``."""
    if mode == "on":
        return [True]
    if mode == "off" or reports_amx(info):
        return [False]
    return [True, False]


def _cpu() -> dict[str, str]:
    facts = {"machine": platform.machine(), "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "flags", "Features", "CPU implementer", "CPU part") and name not in facts:
                    facts[name] = " ".join(sorted(value.split())) if name in ("flags", "Features") else value.strip()
                if not line.strip() and "model name" in facts:
                    break  # the first processor is enough
    except OSError:
        pass
    return facts


def _build() -> dict[str, Any]:
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    libs = {}
    if folder.is_dir():
        for lib in sorted(folder.iterdir()):
            if lib.is_file() and not lib.is_symlink():
                stat = lib.stat()
                libs[lib.name] = [stat.st_size, stat.st_mtime_ns]
    return {"version": getattr(llama_cpp, "__version__", "?"), "libs": libs}


def _model(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_path(model: str, extra_buffers: bool, threads: int, info: str) -> Path:
    facts = {"protocol": PROTOCOL, "build": _build(), "system_info": info, "cpu": _cpu(), "model": _model(model),
             "load": {"extra_buffers": extra_buffers, "threads": threads}, "python": sys.version_info[:2]}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return cache_root() / "llama-canary" / f"{key}.json"


# -- loading with or without the extra buffer types -----------------------------------------------------
_params_lock = threading.Lock()


@contextlib.contextmanager
def model_params(*, extra_buffers: bool) -> Iterator[None]:
    """Within the block, ``Llama(...)`` loads with ``use_extra_bufts`` = ``extra_buffers``.

    llama-cpp-python's ``Llama`` takes no argument for it: it fills its model parameters from
    ``llama_model_default_params()``, looked up on its module at call time, so that function is
    wrapped for the block (under a lock: another thread loading meanwhile waits)."""
    from llama_cpp import llama as llama_module

    binding = llama_module.llama_cpp
    names = [f[0] for f in getattr(binding.llama_model_params, "_fields_", [])]
    if extra_buffers or "use_extra_bufts" not in names:
        yield  # llama.cpp's default is on; a binding without the field has no extra buffer types
        return
    with _params_lock:
        original = binding.llama_model_default_params

        def defaults() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        binding.llama_model_default_params = defaults
        try:
            yield
        finally:
            binding.llama_model_default_params = original


# -- the parent: choose, probing what is not known yet ---------------------------------------------------
def child_command(spec: dict[str, Any]) -> list[str]:
    """The child process (tests replace it with one that crashes)."""
    return [sys.executable, "-m", "rag_cli.generate.canary", json.dumps(spec)]


def probe(model: str, *, extra_buffers: bool, threads: int, timeout: float = TIMEOUT) -> Probe:
    """Run one test decode in a child process and say how it ended."""
    spec = {"model": model, "extra_buffers": extra_buffers, "threads": threads}
    started = time.perf_counter()
    try:
        done = subprocess.run(child_command(spec), capture_output=True, text=True, errors="replace",
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Probe(extra_buffers, Outcome.TIMEOUT, time.perf_counter() - started,
                     detail=f"no answer in {timeout:g} s")
    seconds = time.perf_counter() - started
    tail = _summary(done.stderr)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return Probe(extra_buffers, Outcome.CRASHED, seconds, signal=name, detail=tail)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return Probe(extra_buffers, Outcome.FAILED, seconds, detail=tail or f"exit code {done.returncode}")
    return Probe(extra_buffers, Outcome.OK, seconds, data=json.loads(lines[-1]))


def _summary(stderr: str) -> str:
    """The lines of the child's stderr that say what happened: faulthandler's header and the frame
    that crashed when it died by a signal, else its last lines (the exception)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for n, line in enumerate(lines):
        if line.startswith("Fatal Python error"):
            frame = next((f for f in lines[n + 1:] if f.startswith("File ")), "")
            return f"{line}; innermost frame: {frame}" if frame else line
    return " | ".join(lines[-3:])


def _read(path: Path) -> Probe | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Probe(bool(data["extra_buffers"]), Outcome(str(data["outcome"])), float(data["seconds"]),
                     signal=str(data.get("signal", "")), detail=str(data.get("detail", "")),
                     data=dict(data.get("data") or {}), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: test again


def _write(path: Path, found: Probe) -> None:
    from rag_cli.fileio import write_json_atomically

    record = {k: v for k, v in asdict(found).items() if k != "cached"}
    record["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, record)
    except OSError as exc:  # a read-only cache: tested again next time, nothing worse
        log.info("cannot record the test decode in %s: %s", path, exc)


def plan(model: str, *, mode: str = "auto", threads: int, fresh: bool = False,
         run: Callable[..., Probe] | None = None) -> LoadPlan:
    """The extra-buffer setting to load ``model`` with. Recorded outcomes are reused unless
    ``fresh`` (`rag doctor`); a crash moves on to the next candidate; if every candidate crashed,
    :class:`ModelCrashed`. A probe that neither worked nor crashed decides nothing: its candidate
    is used, and the load here reports what is wrong."""
    run = run or probe
    info = system_info()
    probes: list[Probe] = []
    for extra in candidates(mode, info):
        path = record_path(model, extra, threads, info)
        found = None if fresh else _read(path)
        if found is None:
            log.info("testing %s with llama.cpp's extra buffer types %s in a child process", Path(model).name,
                     "on" if extra else "off")
            found = run(model, extra_buffers=extra, threads=threads)
            if found.outcome in (Outcome.OK, Outcome.CRASHED):
                _write(path, found)
        probes.append(found)
        if found.outcome == Outcome.CRASHED:
            if not found.cached:
                log.warning("llama.cpp crashed (%s) in a test decode of %s with its %s; %s", found.signal,
                            Path(model).name, found.settings, "trying them off" if extra and mode == "auto"
                            else "no other setting to try")
            continue
        if found.outcome != Outcome.OK:
            log.info("the test decode of %s did not finish (%s: %s); loading it anyway", Path(model).name,
                     found.outcome, found.detail)
        return LoadPlan(extra, tuple(probes))
    raise crash_error(model, probes, mode)


def crash_error(model: str, probes: list[Probe], mode: str) -> ModelCrashed:
    tried = " and ".join(p.settings for p in probes)
    signals = ", ".join(sorted({p.signal for p in probes}))
    message = (f"llama.cpp crashed ({signals}) in a test decode of {Path(model).name} with {tried} (a llama.cpp "
               "build that does not suit this CPU, or a damaged model file); run `rag doctor`")
    # The message names `rag doctor` too: `rag ask` prints the passages where a hint would go.
    hint = "set llm.extra_buffers = auto (or off)" if mode == "on" else REBUILD
    return ModelCrashed(message, hint=hint)


# -- the child ------------------------------------------------------------------------------------------
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model with the given settings and decode: the batched prompt, then two tokens."""
    import faulthandler

    faulthandler.enable()  # the parent shows the last lines of the dump if this dies
    started = time.perf_counter()
    from llama_cpp import Llama

    with model_params(extra_buffers=bool(spec["extra_buffers"])):
        llm = Llama(model_path=spec["model"], n_ctx=512, n_threads=int(spec["threads"]) or None, seed=0,
                    verbose=False)
    loaded = time.perf_counter()
    out = llm.create_completion(prompt=CANARY_PROMPT, max_tokens=2, temperature=0.0)
    assert isinstance(out, dict)  # not streamed: one response
    return {"load_seconds": round(loaded - started, 3), "decode_seconds": round(time.perf_counter() - loaded, 3),
            "chat_template": bool(llm.metadata.get("tokenizer.chat_template")),
            "completion_tokens": out["usage"]["completion_tokens"]}


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
