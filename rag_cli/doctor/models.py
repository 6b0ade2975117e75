"""The model checks of `rag doctor` (group "models"): what embeds questions (the ONNX export or
torch), the embedding model, the language model(s) from llm.model / llm.strong_model, or the llm.url
server in their place. Models are loaded and tried only without --no-models; their files are always
located."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from rag_cli.doctor.base import FAIL, OK, SKIP, WARN, CheckState, Found
from rag_cli.errors import ExitCode

PROBE_TEXT = "How often should I feed my starter?"


class ModelChecks(CheckState):
    """embedding runtime, embedding model, language model (and strong model; the llm.url server)."""

    def check_embedding_runtime(self) -> Found:
        """What embeds questions: the cached ONNX export (no torch) or torch."""
        s = self.settings
        assert s is not None
        e = s.embedding
        if e.backend != "sentence-transformers":
            return Found(SKIP, f"embedding.backend = {e.backend}: no model")
        from rag_cli.model_files import resolve_embedding_model
        from rag_cli.store.onnx_query import export_path

        files = resolve_embedding_model(e.model, s.base_dir)
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
        from rag_cli.store.embedders import embedder_from_settings

        query_prefix, _ = embedding_prefixes(e, s.base_dir)
        # Resolves the model folder.
        embedder = embedder_from_settings(e, base_dir=s.base_dir, query_prefix=query_prefix)
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
        from rag_cli.generate.llama import LlamaCppGenerator
        from rag_cli.model_files import download_gguf, resolve_gguf

        location = resolve_gguf(name, s.base_dir)  # ModelLoadError: missing, or not a GGUF file
        size = Path(location).stat().st_size if not location.startswith("hf:") else None
        data: dict[str, Any] = {"setting": name, "path": location, "bytes": size}
        where = f"{name}: {location}" + (f" ({size / 2**20:.0f} MiB)" if size else "")
        if not self.models:
            return Found(OK, f"{where} (not loaded: --no-models)", data=data)
        from rag_cli.generate import canary

        # A real decode, in a child process with the settings `rag ask` would choose, tested afresh
        # (a recorded outcome is replaced): a crash in llama.cpp is a failed check, not a dead doctor.
        generator = LlamaCppGenerator.from_settings(s.llm, name, base_dir=s.base_dir)
        local = download_gguf(location) if location.startswith("hf:") else location
        try:
            chosen = canary.plan(local, mode=s.llm.extra_buffers, threads=generator.threads, fresh=True)
        except canary.ModelCrashed as exc:
            return Found(FAIL, exc.message, exc.hint or "", int(ExitCode.MODEL), data)
        last = chosen.probes[-1]
        data["probes"] = [{"extra_buffers": p.extra_buffers, "outcome": p.outcome, "signal": p.signal,
                           "seconds": round(p.seconds, 3)} for p in chosen.probes]
        data["extra_buffers"] = chosen.extra_buffers
        if last.outcome != canary.Outcome.OK:
            ended = "timed out" if last.outcome == canary.Outcome.TIMEOUT else "failed"
            return Found(FAIL, f"{where}: the test decode in a child process {ended}: {last.detail}",
                         "check the file (download it again), or set llm.model to another GGUF model",
                         int(ExitCode.MODEL), data)
        style = s.llm.prompt_style if s.llm.prompt_style != "auto" else (
            "chat" if last.data.get("chat_template") else "completion")
        data.update(load_seconds=last.data.get("load_seconds"), generate_seconds=last.data.get("decode_seconds"),
                    style=style, child_seconds=round(last.seconds, 3))
        detail = (f"{where}: a child process loaded it in {data['load_seconds']:.2f} s and decoded in "
                  f"{data['generate_seconds']:.2f} s ({style} prompts; llama.cpp's extra buffer types "
                  f"{'on' if chosen.extra_buffers else 'off'})")
        if chosen.fell_back:
            crashed = next(p for p in chosen.probes if p.outcome == canary.Outcome.CRASHED)
            detail += f"; with them on llama.cpp crashed ({crashed.signal}), so `rag ask` loads it with them off"
        return Found(OK, detail, data=data)

    def _check_llm_server(self, name: str) -> Found:
        """llm.url answers GET /models, asked once with short timeouts and no retry; the circuit
        breaker's file is neither read for admission nor written."""
        from rag_cli.generate.breaker import OPEN, CircuitBreaker
        from rag_cli.generate.openai_server import OpenAIServerGenerator

        assert self.settings is not None
        llm = self.settings.llm
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
