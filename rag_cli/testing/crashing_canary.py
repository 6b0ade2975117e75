"""A crash canary child that really dies by SIGSEGV, for tests of the fallback.

    python -m rag_cli.testing.crashing_canary WHEN SPEC                        # the child itself
    python -m rag_cli.testing.crashing_canary --rag WHEN [--cpu INFO] -- ARGS  # `rag ARGS` with such children

WHEN is ``on`` (the test decode crashes with llama.cpp's extra buffer types on), ``off`` (with
them off), ``all`` or ``none``. Otherwise the child is the real one (rag_cli.generate.canary).
The crash is a real invalid read, so the parent sees what it would see on a CPU where llama.cpp
faults. --cpu: the CPU report the parent decides by (canary.system_info), such as
"CPU : AVX2 = 1 |" for a CPU without AMX, where both settings are tried whatever CPU runs the test.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def crashes(when: str, extra_buffers: bool) -> bool:
    return when == "all" or (when == "on" and extra_buffers) or (when == "off" and not extra_buffers)


def command_for(when: str):  # noqa: ANN201 - a replacement for canary.child_command
    def command(spec: dict[str, Any]) -> list[str]:
        return [sys.executable, "-m", "rag_cli.testing.crashing_canary", when, json.dumps(spec)]

    return command


def arm(when: str, cpu: str | None = None) -> None:
    """Make this process's canary children crash as ``when`` says, deciding as on ``cpu`` if given."""
    from rag_cli.generate import canary

    canary.child_command = command_for(when)
    if cpu is not None:
        canary.system_info = lambda: cpu


def _child(when: str, spec: dict[str, Any]) -> None:
    if crashes(when, bool(spec["extra_buffers"])):
        import ctypes
        import faulthandler
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        faulthandler.enable()
        ctypes.string_at(0)  # SIGSEGV
    from rag_cli.generate.canary import child

    print(json.dumps(child(spec)), flush=True)


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--rag":
        split = args.index("--")
        arm(args[1], args[args.index("--cpu") + 1] if "--cpu" in args[:split] else None)
        sys.argv = ["rag", *args[split + 1:]]
        from rag_cli.cli.app import main as rag_main

        rag_main()
        return
    _child(args[0], json.loads(args[1]))


if __name__ == "__main__":
    main()
