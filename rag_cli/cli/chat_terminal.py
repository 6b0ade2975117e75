"""`rag chat` on a terminal: the prompt, line editing and history (the standard library's
``readline``), the /commands, and Ctrl-C.

Ctrl-C while an answer is being retrieved or generated cancels that answer (the conversation
goes on from the last answered turn); at the prompt it clears the line, and a second Ctrl-C in a
row leaves, as Ctrl-D and /quit do (exit code 0). A question that fails with a RagError is
reported and the chat goes on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.text import Text

from rag_cli import observe
from rag_cli.chat import ChatSession
from rag_cli.cli.env import Env, safe
from rag_cli.cli.render import render_answer, render_chat_line, render_sources
from rag_cli.errors import RagError

PROMPT = "rag> "
HISTORY_LINES = 1000
HELP = ("/sources  the sources of the last answer (paths, pages, headings; * = cited)\n"
        "/reset    forget the conversation: the next question is retrieved on its own\n"
        "/help     this list\n"
        "/quit     leave (also Ctrl-D, or Ctrl-C twice at the prompt)")


class LineEditor:
    """``input()`` with readline's editing and a bounded history file (kept 0600: questions can be
    as private as the documents). Without readline (some builds), plain ``input()``."""

    def __init__(self, history: Path, length: int = HISTORY_LINES) -> None:
        self.history = history
        self.length = length
        self._readline: Any = None

    def __enter__(self) -> LineEditor:
        try:
            import readline
        except ImportError:
            return self
        self._readline = readline
        readline.set_history_length(self.length)
        try:
            readline.read_history_file(self.history)
        except OSError:  # none yet, or unreadable: start empty
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._readline is None:
            return
        try:
            self.history.touch(mode=0o600, exist_ok=True)
            os.chmod(self.history, 0o600)
            self._readline.write_history_file(self.history)
        except OSError:
            pass  # a history that cannot be saved is not worth an error on the way out

    def lines(self, prompt: str, env: Env) -> Iterator[str]:
        """The non-empty lines typed, stripped, until Ctrl-D or a second Ctrl-C in a row."""
        interrupted = False
        while True:
            try:
                line = input(prompt)
            except EOFError:
                env.line()
                return
            except KeyboardInterrupt:
                env.line()
                if interrupted:
                    return
                interrupted = True
                env.err.print(Text("(Ctrl-C again, Ctrl-D or /quit to leave)", style="dim"))
                continue
            interrupted = False
            if line.strip():
                yield line.strip()


def run_terminal(env: Env, session: ChatSession, *, as_json: bool, history: Path) -> None:
    """The interactive loop, until /quit, Ctrl-D or a second Ctrl-C at the prompt."""
    streaming = env.rich_stdout and not as_json

    def on_text(piece: str) -> None:
        env.stdout.write(safe(piece))  # the model's text: no terminal control codes
        env.stdout.flush()

    env.err.print(Text("Ask about your documents; /help lists the commands, /quit or Ctrl-D leaves.", style="dim"))
    with LineEditor(history) as editor:
        for text in editor.lines(PROMPT, env):
            if text.startswith("/"):
                if not _command(env, session, text.split()[0].lower()):
                    break
                continue
            try:
                turn, asked = session.ask(text, on_text=on_text if streaming else None)
            except KeyboardInterrupt:
                env.line()
                env.err.print(Text("(answer cancelled)", style="dim"))
                continue
            except RagError as exc:  # this question failed (too long, the index went away): say so, go on
                env.error(exc.message, exc.hint)
                continue
            if turn.follow_up:
                env.note(f"follow-up, retrieved with: {turn.search_query}")
            if as_json:
                render_chat_line(env, asked.answer, as_json=True, search_query=turn.search_query)
            else:
                render_answer(env, asked.answer, as_json=False, streamed=streaming and not asked.answer.cached)
                env.line()
            observe.timings("chat", asked.stages, model=asked.answer.model, cached=asked.answer.cached,
                            follow_up=turn.follow_up)


def _command(env: Env, session: ChatSession, command: str) -> bool:
    """Run a /command; False to leave."""
    if command in ("/quit", "/exit"):
        return False
    if command == "/reset":
        session.reset()
        env.err.print(Text("(conversation forgotten)", style="dim"))
    elif command == "/sources":
        render_sources(env, session.sources())
    elif command == "/help":
        env.line(HELP)
    else:
        env.warn(f"unknown command {command}; /help lists the commands")
    return True
