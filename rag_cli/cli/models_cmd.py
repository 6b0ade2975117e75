"""`rag models` (the bundled models and the catalogue) and `rag models pull NAME`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from rag_cli.cli.env import Env, boundary, env_of
from rag_cli.cli.options import Json
from rag_cli.model_pull import ModelList, PullReport, list_models, pull_model

models_app = typer.Typer(help="List the language models, and pull a bigger one from the hub.",
                         invoke_without_command=True, no_args_is_help=False)


def models(ctx: typer.Context, as_json: Json = False) -> None:
    """List the bundled models and the catalogue of known-good GGUF files, and which are pulled."""
    if ctx.invoked_subcommand:
        return
    env = env_of(ctx)
    listing = list_models()
    env.print_json(listing.to_dict()) if as_json else _render_list(env, listing)


def pull(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME", help="A name `rag models` lists.")],
         as_json: Json = False) -> None:
    """Download a catalogue model into the cache (resumable; its sha256 checked) and print the
    settings that use it."""
    env = env_of(ctx)
    with _Bars(env) as bars:
        report = pull_model(name, bars)
    env.print_json(report.to_dict()) if as_json else _render_pull(env, report)


def _render_list(env: Env, listing: ModelList) -> None:
    from rich.table import Table

    heads = ("name", "size", "RAM", "licence", "prompt style", "checksum", "pulled", "repo / file")
    rows = [(r.name, f"{r.size_mb / 1000:.1f} GB" if r.size_mb >= 1000 else f"{r.size_mb} MB", f"{r.ram_gb:g} GB",
             r.licence, f"{r.prompt_style} ({r.template})", r.checksum,
             ("installed" if r.source == "bundled" else "pulled") if r.pulled else "-", f"{r.repo} / {r.file}")
            for r in listing.rows]
    if env.rich_stdout:
        table = Table(*heads, show_edge=False, header_style="bold")
        for row in rows:
            table.add_row(*row)
        env.out.print(table)
    else:
        env.line("\t".join(heads))
        for row in rows:
            env.line("\t".join(row))
    env.line(f"\npulled models go to {listing.cache}; `rag models pull NAME` downloads one "
             "(checksum: pinned = the catalogue's sha256, hub = the sha256 the hub states)")


def _render_pull(env: Env, r: PullReport) -> None:
    if r.already_pulled:
        env.line(f"{r.name} is already pulled: {r.path}")
    else:
        resumed = f", resumed at {r.resumed_from / 1e6:.0f} MB" if r.resumed_from else ""
        env.line(f"Pulled {r.name} ({r.size_bytes / 1e6:.0f} MB in {r.seconds:.0f} s{resumed}): {r.path}")
        against = "as pinned in the catalogue" if r.checked_against == "pinned" else "as the hub states it"
        env.line(f"sha256 {r.sha256} ({against})")
    strong, model, flag = r.settings
    env.line(f"\nfor the questions routing finds hard (.rag.toml):  {strong}")
    env.line(f"for every question:  {model}   for one:  rag ask {flag} \"...\"")


class _Bars:
    """rag_cli.progress.Progress as a download bar (bytes, speed, time left) on a terminal's stderr."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              TimeRemainingColumn(), console=env.err, transient=True) \
            if env.interactive_stderr else None
        self._task: Any = None

    def __enter__(self) -> _Bars:
        if self._bars:
            self._bars.start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._bars:
            self._bars.stop()

    def update(self, task: str, *, advance: int = 0, total: int | None = None) -> None:
        if not self._bars:
            return
        if self._task is None:
            self._task = self._bars.add_task(task, total=total)
        self._bars.update(self._task, advance=advance, total=total)

    def note(self, text: str) -> None:
        self.env.event(text)


def register(app: typer.Typer) -> None:
    models_app.callback()(boundary(models))
    models_app.command("pull")(boundary(pull))
    app.add_typer(models_app, name="models")
