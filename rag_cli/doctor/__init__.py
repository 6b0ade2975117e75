"""`rag doctor`: check the installation, the models and the index, and say what to run to fix them.

Each check returns a ``Check`` (ok, warn, fail or skip; a detail; for a failure or a warning one
actionable line). Checks run one after another, each on a watchdog thread with a time limit, so a
stuck model load or server never hangs the command; network probes have their own short timeouts
(store.url: at most 10 s, llm.url: 3 s to connect, 10 s to answer) and nothing is retried.

A failure's exit code is the one the command that meets the problem exits with (ExitCode): 2 bad
settings, 4 the index, the store, the disk or the index folder, 5 a model or a package the models
need, 9 the llm.url server. The report's exit code is its first failure's, in the printed order.

Slow parts are optional (``models=False``, `--no-models`): loading the embedding model and
embedding one text, and the language model's test decode in a child process (the crash canary's:
generate/canary.py), which a native crash cannot take down with it. Model files are still
located. torch is imported only when the embedding model has no ONNX export (it is what
`rag ask` would then do).

The package: ``base`` (Found, the statuses, the state the checks share), ``install`` (settings and
installation), ``models``, ``index`` and ``storage`` (the index group); this module runs them.
A check's helpers live in the module that uses them: patch them there (``rag_cli.doctor.install._version``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rag_cli.config import Settings
from rag_cli.doctor.base import FAIL, OK, SKIP, WARN, Found
from rag_cli.doctor.index import IndexChecks
from rag_cli.doctor.install import MODEL_PACKAGES, SHOWN_PACKAGES, InstallChecks
from rag_cli.doctor.models import PROBE_TEXT, ModelChecks
from rag_cli.doctor.storage import DISK_FLOOR, DISK_WARN, REINDEX, StorageChecks
from rag_cli.errors import ExitCode, RagError
from rag_cli.index_dir import IndexPaths
from rag_cli.models import Check, DoctorReport

__all__ = ["CHECK_TIMEOUT", "DISK_FLOOR", "DISK_WARN", "FAIL", "MODEL_PACKAGES", "OK", "PROBE_TEXT", "REINDEX",
           "SHOWN_PACKAGES", "SKIP", "WARN", "Doctor", "Found", "run_doctor"]

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 60.0  # seconds a check may take (the embedding model's first load with torch: ~15 s here)


class Doctor(InstallChecks, ModelChecks, IndexChecks, StorageChecks):
    """Runs the checks in order; ``on_check`` sees each one as it finishes (the CLI prints it)."""

    def __init__(self, load_settings: Callable[[], Settings], *, models: bool = True,
                 timeout: float = CHECK_TIMEOUT, on_check: Callable[[Check], None] | None = None) -> None:
        self.load_settings = load_settings
        self.models = models
        self.timeout = timeout
        self.on_check = on_check or (lambda check: None)
        self.settings: Settings | None = None
        self.paths: IndexPaths | None = None
        self.index: dict[str, Any] | None = None  # what the index check learnt (None: no usable index)
        self.store: Any = None
        self.checks: list[Check] = []

    def run(self) -> DoctorReport:
        started = time.perf_counter()
        self._check("settings", "settings", self.check_settings)
        for name, fn in (("python", self.check_python), ("packages", self.check_packages),
                         ("llama-cpp", self.check_llama_cpp), ("onnxruntime", self.check_onnxruntime)):
            self._check(name, "installation", fn)
        models = [("embedding runtime", self.check_embedding_runtime), ("embedding model", self.check_embedding_model),
                  ("language model", lambda: self.check_language_model("llm.model"))]
        if self.settings is not None and self.settings.llm.strong_model:
            models.append(("strong model", lambda: self.check_language_model("llm.strong_model")))
        for name, fn in models:
            self._check(name, "models", fn, needs_settings=True)
        for name, fn in (("index", self.check_index), ("build record", self.check_build_record),
                         ("run state", self.check_run_state), ("lock", self.check_lock),
                         ("vector store", self.check_vector_store), ("keyword index", self.check_keyword_index),
                         ("counts", self.check_counts), ("disk space", self.check_disk),
                         ("folder permissions", self.check_folder)):
            self._check(name, "index", fn, needs_settings=True)
        return DoctorReport(checks=tuple(self.checks), index_dir=str(self.paths.root) if self.paths else "",
                            store=self.store.where if self.store is not None else "",
                            models_loaded=self.models, seconds=time.perf_counter() - started)

    # -- the runner ------------------------------------------------------------------------------------
    def _check(self, name: str, group: str, fn: Callable[[], Found], *, needs_settings: bool = False) -> None:
        started = time.perf_counter()
        if needs_settings and self.settings is None:
            found = Found(SKIP, "the settings did not load")
        else:
            found = self._watched(name, fn)
        check = Check(name=name, group=group, status=found.status, detail=found.detail, fix=found.fix,
                      exit_code=found.code if found.status == FAIL else 0, seconds=time.perf_counter() - started,
                      data=found.data)
        self.checks.append(check)
        self.on_check(check)

    def _watched(self, name: str, fn: Callable[[], Found]) -> Found:
        """``fn`` on a daemon thread, given ``timeout`` seconds. A RagError is a failure with its
        message, hint and exit code; any other exception too (a damaged index raises what the
        other commands never expect; the traceback goes to the -v log)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["found"] = fn()
            except RagError as exc:
                box["found"] = Found(FAIL, exc.message, exc.hint or "", int(exc.exit_code))
            except Exception as exc:  # noqa: BLE001 - reported as this check's failure
                log.debug("check %s failed", name, exc_info=True)
                box["found"] = Found(FAIL, f"{type(exc).__name__}: {exc}", "see `rag -v doctor` for the traceback",
                                     _code_for(name))

        thread = threading.Thread(target=target, name=f"doctor: {name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            return Found(FAIL, f"did not finish within {self.timeout:g} s", "run `rag -v doctor --timeout 300` to "
                         "see where it waits", _code_for(name))
        return box.get("found") or Found(FAIL, "stopped without a result", "see `rag -v doctor`", _code_for(name))


def run_doctor(load_settings: Callable[[], Settings], *, models: bool = True, timeout: float = CHECK_TIMEOUT,
               on_check: Callable[[Check], None] | None = None) -> DoctorReport:
    """Run every check. ``load_settings`` is called by the first check, so that a bad .rag.toml is
    reported as a failed check while the installation is still checked."""
    return Doctor(load_settings, models=models, timeout=timeout, on_check=on_check).run()


def _code_for(check: str) -> int:
    """The exit code of a check's unexpected failure (an exception that is not a RagError, a timeout)."""
    models = ("embedding runtime", "embedding model", "language model", "strong model", "llama-cpp", "onnxruntime")
    return int(ExitCode.MODEL if check in models else ExitCode.INDEX)
