"""Generators: chat messages in, streamed text out, from a local GGUF model via llama.cpp.

The constructor is cheap: it checks the model setting (``model_files.gguf_location``) and loads
nothing. The first ``warm_up`` makes the file (Gemma assembled from its parts, a hub file
downloaded) and loads the model; every llama.cpp failure is translated into ModelLoadError /
GenerationError here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_cli import crash
from rag_cli.errors import GenerationError, ModelLoadError, RagError
from rag_cli.model_files import gguf_location, local_gguf
from rag_cli.models import Generation

if TYPE_CHECKING:
    from rag_cli.generate.canary import LoadPlan

log = logging.getLogger(__name__)

_log_callback: Any = None  # kept referenced: llama.cpp calls it from C (False: no hook)
# llama.cpp's lines while it reads a model file (its metadata, every tensor): below DEBUG, so -v
# shows what it showed when llama-cpp-python sent them to /dev/null (``_output_kept``).
LOAD_LOG_LEVEL = 5
_quiet = threading.local()  # .depth > 0: this thread is inside llama-cpp-python's quiet block


def _route_llama_logs() -> None:
    """Send llama.cpp's own log lines (some ignore verbose=False, e.g. Gemma's SWA cache note) to
    this module's logger at debug level instead of stderr (at LOAD_LOG_LEVEL while a model file
    is read)."""
    global _log_callback
    if _log_callback is not None:
        return
    try:
        import ctypes

        import llama_cpp

        @llama_cpp.llama_log_callback
        def callback(level, text, user_data):  # noqa: ANN001 - ctypes signature
            at = LOAD_LOG_LEVEL if getattr(_quiet, "depth", 0) else logging.DEBUG
            log.log(at, "llama.cpp: %s", (text or b"").decode("utf-8", "replace").rstrip())

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _log_callback = callback
    except Exception:  # an older or newer binding without the hook: keep llama.cpp's default
        _log_callback = False


class _QuietThread:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``: instead of pointing the
    process's stdout and stderr at /dev/null, it demotes llama.cpp's log lines of this thread
    (to LOAD_LOG_LEVEL). ``disable``: verbose, as the binding passes it."""

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable

    def __enter__(self) -> _QuietThread:
        if not self.disable:
            _quiet.depth = getattr(_quiet, "depth", 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.disable:
            _quiet.depth -= 1


_kept_lock = threading.Lock()
_kept_loads = 0  # loads inside _output_kept now
_kept_saved: list[tuple[Any, Any]] = []  # (module, its suppress_stdout_stderr) while patched


@contextmanager
def _output_kept() -> Iterator[None]:
    """Within the block, llama-cpp-python leaves stdout and stderr alone while it loads a model.

    With ``verbose=False`` it points file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``)
    at /dev/null while it reads the model file: for every thread of the process, so what
    retrieval logs meanwhile (``rag -v ask`` loads the model beside retrieval) would be lost.
    llama.cpp's own lines go to this module's logger instead (``_route_llama_logs``), so the
    binding's ``suppress_stdout_stderr`` is replaced for the block by ``_QuietThread``, which
    quiets only those lines, of the loading thread, as the redirect did. Concurrent loads share
    one replacement; the last to finish restores the binding's."""
    global _kept_loads
    from llama_cpp import _internals, llama as llama_module

    with _kept_lock:
        if _kept_loads == 0:
            modules: tuple[Any, ...] = (llama_module, _internals)
            for module in modules:
                original = getattr(module, "suppress_stdout_stderr", None)
                if original is not None:
                    _kept_saved.append((module, original))
                    module.suppress_stdout_stderr = _QuietThread
        _kept_loads += 1
    try:
        yield
    finally:
        with _kept_lock:
            _kept_loads -= 1
            if _kept_loads == 0:
                while _kept_saved:
                    module, original = _kept_saved.pop()
                    module.suppress_stdout_stderr = original


class LlamaCppGenerator:
    """A GGUF model in-process through llama-cpp-python, with the chat template stored in the file."""

    def __init__(self, model: str, *, base_dir: Path | None = None, context_size: int = 2048,
                 threads: int = 0, seed: int = 0, style: str = "auto", extra_buffers: str = "auto") -> None:
        self.setting = model
        self.location = gguf_location(model, base_dir)  # checked; Gemma's file is assembled by warm_up
        self.name = Path(self.location).name if not self.location.startswith("hf:") else self.location
        self.context_size = context_size
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.seed = seed
        self.style = style  # "auto" until the model is loaded
        self.extra_buffers = extra_buffers  # llm.extra_buffers: auto, on, off
        self.load_plan: LoadPlan | None = None  # the canary's choice, once loaded
        self._llm: Any = None  # llama_cpp.Llama, once loaded
        self._loading: threading.Thread | None = None
        self._load_error: BaseException | None = None

    @classmethod
    def from_settings(cls, llm: Any, model: str, *, base_dir: Path | None = None,
                      context_size: int | None = None) -> LlamaCppGenerator:
        """The generator for ``model`` with the llm.* settings (``llm``: LlmSettings)."""
        return cls(model, base_dir=base_dir, context_size=context_size or llm.context_size, threads=llm.threads,
                   style=llm.prompt_style, extra_buffers=llm.extra_buffers)

    def start_warm_up(self) -> None:
        """Begin loading the model on a background thread; ``warm_up`` waits for it. llama.cpp
        loads in C through ctypes, which releases the GIL, so the load runs beside retrieval on
        another core (`rag ask` starts it before it searches: ~0.4 s of a cold ask)."""
        if self._llm is not None or self._loading is not None or self.location.startswith("hf:"):
            return  # a hub model may download first: on the caller's thread, where progress shows
        try:
            import llama_cpp  # noqa: F401  (imported here: two threads importing numpy at once break it)
        except ImportError:
            return  # warm_up reports it

        def load() -> None:
            try:
                self._load()
            except BaseException as exc:  # re-raised by warm_up, on the caller's thread
                self._load_error = exc

        self._loading = threading.Thread(target=load, name="llama-load", daemon=True)
        self._loading.start()

    def settle(self) -> None:
        """Wait for a background load, if one runs (its error, if any, waits for ``warm_up``)."""
        if self._loading is not None:
            self._loading.join()
            self._loading = None

    def warm_up(self) -> None:
        self.settle()
        if self._load_error is not None:
            error, self._load_error = self._load_error, None
            raise error
        if self._llm is None:
            self._load()

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelLoadError(f"llama-cpp-python is not installed ({exc})",
                                 hint="pip install llama-cpp-python") from None
        _route_llama_logs()
        self.location = local_gguf(self.setting, self.location)
        from rag_cli.generate import canary

        # A test decode in a child process, once per build, model, CPU and settings: a crash there
        # picks other settings (or raises ModelCrashed) instead of killing this process.
        self.load_plan = canary.plan(self.location, mode=self.extra_buffers, threads=self.threads)
        kwargs = dict(n_ctx=self.context_size, n_threads=self.threads, seed=self.seed, verbose=False)
        try:
            with canary.model_params(extra_buffers=self.load_plan.extra_buffers), _output_kept():
                self._llm = crash.in_stage(f"llama.cpp while loading {self.name}", Llama, model_path=self.location,
                                           **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model {self.location} (a damaged or unsupported GGUF file?): "
                                 f"{type(exc).__name__}: {exc}",
                                 hint="check the file, or set llm.model to another GGUF model") from None
        trained = self._llm.metadata.get(f"{self._llm.metadata.get('general.architecture', 'llama')}.context_length")
        if trained and trained.isdigit() and int(trained) < self.context_size:
            self.context_size = int(trained)
        if self.style == "auto":  # a model without a chat template is a base model: complete text
            self.style = "chat" if self._llm.metadata.get("tokenizer.chat_template") else "completion"

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        assert self._llm is not None
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        self.warm_up()
        return crash.in_stage(f"llama.cpp while generating an answer with {self.name}", self._generate, messages,
                              max_tokens=max_tokens, temperature=temperature, on_text=on_text)

    def _generate(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
                  on_text: Callable[[str], None] | None) -> Generation:
        assert self._llm is not None
        started = time.perf_counter()
        pieces: list[str] = []
        completion = bool(messages) and messages[0]["role"] == "prompt"
        try:
            if completion:
                stream: Iterable[dict] = self._llm.create_completion(
                    prompt=messages[0]["content"], max_tokens=max_tokens, temperature=temperature, stream=True,
                    seed=self.seed, repeat_penalty=1.1)
            else:
                stream = self._llm.create_chat_completion(
                    messages=list(messages), max_tokens=max_tokens, temperature=temperature, stream=True,
                    seed=self.seed, repeat_penalty=1.1)
            for event in stream:
                choice = event["choices"][0]
                delta = choice.get("text") or choice.get("delta", {}).get("content") or ""
                line_ends = False
                if completion:
                    # A base model's answer is its first non-empty line: it often starts with a
                    # line break ("Short answer:\n…"), and after the line it goes on with more text.
                    if not pieces:
                        delta = delta.lstrip()
                    delta, newline, _ = delta.partition("\n")
                    line_ends = bool(newline)
                if delta:
                    pieces.append(delta)
                    if on_text:
                        on_text(delta)
                if line_ends and pieces:
                    break
        except RagError:
            raise
        except Exception as exc:
            raise GenerationError(f"the model failed while answering: {type(exc).__name__}: {exc}") from None
        text = "".join(pieces)
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=self.count_tokens(text),
                          seconds=time.perf_counter() - started, model=self.name)
