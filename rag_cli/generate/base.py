"""The Generator seam: what answering needs of a language model, and the one function that
builds a generator from the settings.

Implementations: ``llama.LlamaCppGenerator`` (a GGUF model in-process), ``openai_server.
OpenAIServerGenerator`` (the ``llm.url`` server) and ``rag_cli.testing.fakes.ScriptedGenerator``
(tests). None of them imports this module: the Protocol is structural.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from rag_cli.config import LlmSettings
from rag_cli.models import Generation


class Generator(Protocol):
    """Chat messages in, streamed text out. ``warm_up`` loads the model (or checks the server)
    once; ``count_tokens`` and ``generate`` call it first."""

    name: str
    context_size: int
    style: str  # "chat" (messages through the model's chat template) or "completion" (one text to continue)

    def warm_up(self) -> None:
        """Load the model, or check the server, once; a failure is ModelLoadError or GenerationError."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
                 on_text: Callable[[str], None] | None = None) -> Generation: ...


def generator_from_settings(llm: LlmSettings, model: str, *, base_dir: Path | None = None) -> Generator:
    """The generator for ``model`` (a setting value) with the llm.* settings: the ``llm.url``
    server's when one is set (then ``model`` is only the name sent to it, and nothing is loaded
    here), else llama.cpp in-process (``LlamaCppGenerator.from_settings``, whose first load runs
    the crash canary). The model is loaded, or the server asked, by ``warm_up``."""
    if llm.url:
        from rag_cli.generate.openai_server import OpenAIServerGenerator

        return OpenAIServerGenerator.from_settings(llm, model)
    from rag_cli.generate.llama import LlamaCppGenerator

    return LlamaCppGenerator.from_settings(llm, model, base_dir=base_dir)
