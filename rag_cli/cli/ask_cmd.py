"""`rag ask QUESTION`"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rag_cli import observe
from rag_cli.cli.env import boundary, env_of, safe
from rag_cli.cli.options import Json, settings_for
from rag_cli.cli.render import render_answer
from rag_cli.errors import ExitCode, InputError


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question; '-' reads it from stdin.", show_default=False)],
    top_k: Annotated[int | None, typer.Option("--top-k", metavar="N",
                                              help="Chunks to retrieve (retrieval.top_k).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", metavar="EXPR",
                                                    help="Filter: path=GLOB, type=pdf, page=N or "
                                                    "N-M, modified>=DATE (or 30d), FIELD=VALUE, FIELD>=N "
                                                    "(repeatable; all must hold).")] = None,
    model: Annotated[str | None, typer.Option("--model", metavar="MODEL", help="GGUF model file (or 'bundled', "
                                              "'gemma-270m', or hf:REPO/FILE.gguf); with llm.url, a model name "
                                              "the server knows; overrides routing.")] = None,
    retrieve_only: Annotated[bool, typer.Option("--retrieve-only", help="Print the passages; load no "
                                                "language model.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not answer from the cache.")] = False,
    evidence: Annotated[bool, typer.Option("--evidence", help="Under the answer, the quote of the sources "
                                           "that supports each sentence (page, heading, offsets).")] = False,
    as_json: Json = False,
) -> None:
    """Answer a question from the indexed documents, with citations."""
    env = env_of(ctx)
    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise InputError("the question is empty")
    settings = settings_for(env, {"retrieval.top_k": top_k})
    from rag_cli.api import Index
    from rag_cli.retrieve.filters import parse_where

    parse_where(where or [])  # a bad --where is an input error before anything opens
    streaming = env.rich_stdout and not as_json and not retrieve_only

    def on_text(piece: str) -> None:
        env.stdout.write(safe(piece))  # the model's text: no terminal control codes
        env.stdout.flush()

    asked = Index(settings).ask(question, where=where or [], model=model, retrieve_only=retrieve_only,
                                use_cache=False if no_cache else None, on_text=on_text if streaming else None)
    answer, stages = asked.answer, asked.stages
    if asked.served_by is not None:
        env.note(f"answered by rag serve (pid {asked.served_by}) in {1000 * asked.seconds:.0f} ms")
    render_answer(env, answer, as_json=as_json, streamed=streaming and not answer.cached, evidence=evidence)
    note = "; ".join(([f"model {answer.model} ({answer.route or '-'})"] if answer.model else [])
                     + (["from cache"] if answer.cached else []))
    observe.timings("ask", stages, note=note, model=answer.model, route=answer.route or None, cached=answer.cached,
                    served=asked.served_by is not None)
    if answer.error:  # 9: the llm.url server was unavailable; 5: the model failed
        unavailable = answer.error_code == ExitCode.LLM_UNAVAILABLE
        raise typer.Exit(int(ExitCode.LLM_UNAVAILABLE if unavailable else ExitCode.MODEL))
    if answer.refused:
        raise typer.Exit(int(ExitCode.REFUSED))


def register(app: typer.Typer) -> None:
    app.command("ask")(boundary(ask))
