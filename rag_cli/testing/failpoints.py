"""Run the `rag` command with a failpoint: SIGKILL the process at the Nth call of a function.

    python -m rag_cli.testing.failpoints MODULE:QUALNAME:N[:after][:SIGNAL] -- index ./docs

``MODULE:QUALNAME`` names a function or method (``rag_cli.store.chroma:ChromaStore.upsert_raw``);
the process kills itself (SIGKILL: no cleanup, no ``finally``, as a power cut or the OOM killer
would) on entering its Nth call, or with ``:after`` on leaving it. ``:SIGINT`` (any signal name)
sends that signal instead: SIGINT is what Ctrl-C sends. Tests use it to stop a run at exact points
instead of after guessed delays.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def arm(spec: str) -> None:
    """Patch the function ``spec`` names so that its Nth call kills (or signals) the process."""
    parts = spec.split(":")
    module_name, qualname, nth = parts[0], parts[1], int(parts[2])
    after = "after" in parts[3:]
    sent = next((signal.Signals[p] for p in parts[3:] if p.startswith("SIG")), signal.SIGKILL)
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for attr in path:
        owner = getattr(owner, attr)
    original = getattr(owner, name)
    calls = {"n": 0}

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == nth and not after:
            os.kill(os.getpid(), sent)
        result = original(*args, **kwargs)
        if calls["n"] == nth and after:
            os.kill(os.getpid(), sent)
        return result

    setattr(owner, name, wrapper)


def main() -> None:
    args = sys.argv[1:]
    if "--" not in args:
        sys.exit(__doc__)
    split = args.index("--")
    for spec in args[:split]:
        arm(spec)
    sys.argv = ["rag", *args[split + 1:]]
    from rag_cli.cli.app import main as rag_main

    rag_main()


if __name__ == "__main__":
    main()
