"""`rag log stats | export | path | clear`: the query log (ask.log; the library's rag_cli/querylog.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, parse_duration, settings_for
from rag_cli.querylog import LogStats, QueryLog, export, stats, write_questions
from rag_cli.status import human_bytes

log_app = typer.Typer(help="The query log (ask.log = true): stats, export to a question file, path, clear.",
                      no_args_is_help=True, rich_markup_mode=None)


@log_app.command("stats")
@boundary
def stats_cmd(ctx: typer.Context, days: Annotated[float, typer.Option("--days", metavar="N", min=0.0,
              help="Summarise the last N days.")] = 30.0, as_json: Json = False) -> None:
    """Refusal rate, latency percentiles, cache hits and the most-asked questions of the last N days."""
    env = env_of(ctx)
    report = stats(settings_for(env, {}), days=days)
    if as_json:
        env.print_json(report.to_dict())
        return
    for line in _stats_lines(report):
        env.line(line)


def _stats_lines(st: LogStats) -> list[str]:
    head = f"query log {st.path} ({'on' if st.enabled else 'off: set ask.log = true'}, {human_bytes(st.size_bytes)})"
    if not st.questions:
        return [head, f"no questions in the last {st.days:g} days"]

    def pct(share: float | None) -> str:
        return f"{100 * (share or 0):.1f}%"

    lat = " ".join(f"{k} {v:.2f} s" for k, v in st.latency.items() if v is not None)
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(st.refusal_reasons.items()))
    lines = [head, f"last {st.days:g} days: {st.questions} questions",
             f"refused   {st.refused} ({pct(st.refusal_rate)})" + (f": {reasons}" if reasons else ""),
             f"cached    {st.cached} ({pct(st.cache_hit_share)})", f"errors    {st.errors}", f"latency   {lat}",
             "most asked:"]
    return lines + [f"  {n:>4}  {q}" for q, n in st.top]


@log_app.command("export")
@boundary
def export_cmd(ctx: typer.Context,
               output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE",
                                 help="Write the question file here (default: stdout).")] = None,
               since: Annotated[str | None, typer.Option("--since", metavar="DURATION",
                                help="Only questions of the last DURATION (30d, 12h); default: the whole log.")] = None,
               include_refused: Annotated[bool, typer.Option("--include-refused",
                                          help="Also refused questions, as answerable: false.")] = False) -> None:
    """Write the logged questions as a question file to label for `rag eval`: one per question, its
    latest answer as `answers`, the documents it cited as `relevant`, `answerable` to confirm."""
    env = env_of(ctx)
    exported = export(settings_for(env, {}), since=parse_duration(since) if since else None,
                      include_refused=include_refused)
    left_out = (f"; left out: {exported.refused_left_out} refused (--include-refused), "
                f"{exported.errors_left_out} without an answer") if exported.refused_left_out or \
        exported.errors_left_out else ""
    summary = f"{len(exported.rows)} questions from {exported.entries} log entries{left_out}"
    if output is None:
        for row in exported.rows:
            env.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        env.event(summary)
        return
    write_questions(exported, output)
    env.line(f"{summary}: wrote {output} (check answers, relevant and answerable, then `rag eval {output}`)")


@log_app.command("path")
@boundary
def path_cmd(ctx: typer.Context) -> None:
    """Print where the query log is kept."""
    env_of(ctx).line(str(QueryLog.of(settings_for(env_of(ctx), {})).path))


@log_app.command("clear")
@boundary
def clear_cmd(ctx: typer.Context) -> None:
    """Delete the query log (and its rotated .1 file)."""
    env = env_of(ctx)
    qlog = QueryLog.of(settings_for(env, {}))
    env.line(f"removed {human_bytes(qlog.clear())} of query log from {qlog.folder}")


def register(app: typer.Typer) -> None:
    app.add_typer(log_app, name="log")
