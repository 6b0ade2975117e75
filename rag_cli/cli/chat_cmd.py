"""`rag chat`: questions and follow-ups on one warm index (rag_cli.chat.ChatSession).

On a terminal: cli/chat_terminal.py (the prompt, readline, the /commands). Piped: a question a
line in, an answer a line out (``render_chat_line``); a line ``/reset`` forgets the conversation."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rag_cli import observe
from rag_cli.chat import DEFAULT_METHOD, METHODS, ChatSession
from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import settings_for
from rag_cli.cli.render import render_chat_line


def chat(
    ctx: typer.Context,
    top_k: Annotated[int | None, typer.Option("--top-k", metavar="N",
                                              help="Chunks to retrieve (retrieval.top_k).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", metavar="EXPR", help="Filter, as `rag ask --where` "
                                                    "(repeatable; all must hold), for every question.")] = None,
    model: Annotated[str | None, typer.Option("--model", metavar="MODEL", help="GGUF model file (or 'bundled', "
                                              "'gemma-270m', or hf:REPO/FILE.gguf), as `rag ask --model`.")] = None,
    follow_ups: Annotated[str, typer.Option("--follow-ups", metavar="METHOD", help="Retrieval query of a turn: "
                                            f"{', '.join(METHODS)} (see docs/commands.md).")] = DEFAULT_METHOD,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not answer from the cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer, on one line "
                                          "(the shape of `rag ask --json`).")] = False,
) -> None:
    """Ask questions and follow-ups in one session: models and index stay loaded."""
    env = env_of(ctx)
    settings = settings_for(env, {"retrieval.top_k": top_k})
    from rag_cli.api import Index
    from rag_cli.retrieve.filters import parse_where

    parse_where(where or [])  # a bad --where is an input error before anything opens
    session = ChatSession(Index(settings, serve=False), where=where or [], model=model, method=follow_ups,
                          use_cache=False if no_cache else None)
    session.open()
    if sys.stdin.isatty():
        from rag_cli.cli.chat_terminal import run_terminal
        from rag_cli.index_dir import IndexPaths

        run_terminal(env, session, as_json=as_json, history=IndexPaths(settings.index_dir).chat_history)
    else:
        for line in sys.stdin:
            if line.strip() == "/reset":
                session.reset()
            elif line.strip():
                turn, asked = session.ask(line)
                render_chat_line(env, asked.answer, as_json=as_json, search_query=turn.search_query)
                observe.timings("chat", asked.stages, model=asked.answer.model, cached=asked.answer.cached)


def register(app: typer.Typer) -> None:
    app.command("chat")(boundary(chat))
