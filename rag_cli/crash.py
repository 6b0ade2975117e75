"""Native crashes that name their stage: never a bare "Segmentation fault".

llama.cpp, ONNX Runtime and Chroma run native code in this process; a fault in one of them kills
it with a signal, past every ``try``. :func:`enable` turns on :mod:`faulthandler`, which prints the
Python stack of every thread on SIGSEGV, SIGFPE, SIGABRT, SIGBUS and SIGILL. :func:`in_stage` runs a
call inside a frame whose *file name* is a one-line hint (``rag-cli crashed in llama.cpp while
generating an answer (gemma.gguf): run `rag doctor` ...``), so the dump that faulthandler writes at
the moment of the crash, when no Python code can run any more, carries that line.

Standard library only: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import faulthandler
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

HINT = "run `rag doctor`, which tests each stage in a child process and says how to avoid it"


def enable() -> None:
    """Dump every thread's stack on a fatal signal (to stderr; idempotent)."""
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable(file=sys.stderr, all_threads=True)
        except (AttributeError, ValueError, OSError):  # stderr closed or without a descriptor
            pass


@functools.lru_cache(maxsize=64)
def _runner(stage: str) -> Callable[..., Any]:
    # The function's code object is compiled with the hint as its file name: faulthandler prints
    # `File "<hint>", line 2 in native_stage` among the frames of the thread that crashed.
    filename = f"<rag-cli crashed in {stage}: {HINT}>".replace("\n", " ")
    namespace: dict[str, Any] = {}
    code = compile("def native_stage(fn, args, kwargs):\n    return fn(*args, **kwargs)\n", filename, "exec")
    exec(code, namespace)  # noqa: S102 - a fixed two-line function, compiled for its file name
    return namespace["native_stage"]


def in_stage(stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, so that a native crash inside it is reported as a crash in ``stage``
    (e.g. "llama.cpp while generating an answer with gemma.gguf")."""
    return _runner(stage)(fn, args, kwargs)
