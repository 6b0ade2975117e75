"""`python -m llama_cpp.server`, loading its model with the settings the crash canary chooses.

    python -m rag_cli.testing.llama_server --model FILE.gguf [llama_cpp.server options]

llama-cpp-python's server has no option for llama.cpp's extra buffer types, so on a CPU where they
crash it (AMX, llama.cpp #20824) the bare server dies on its first request. The tests start it
through this wrapper; llama.cpp's own `llama-server` takes `--no-repack` for the same purpose.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    from rag_cli.generate import canary

    args = sys.argv[1:]
    model = args[args.index("--model") + 1]
    chosen = canary.plan(model, mode=os.environ.get("RAG_LLM_EXTRA_BUFFERS", "auto"),
                         threads=max(1, os.cpu_count() or 1))
    with canary.model_params(extra_buffers=chosen.extra_buffers):
        sys.argv = ["llama_cpp.server", *args]
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
