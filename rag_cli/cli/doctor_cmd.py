"""`rag doctor`"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from rag_cli import observe
from rag_cli.cli.env import Env, boundary, env_of
from rag_cli.cli.options import Json, settings_for
from rag_cli.models import Check, CheckStatus, DoctorReport

STYLES = {CheckStatus.OK: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "bold red", CheckStatus.SKIP: "dim"}


def doctor(
    ctx: typer.Context,
    no_models: Annotated[bool, typer.Option("--no-models", help="Do not load the embedding and language models "
                                            "(they are still located): a check in about a second.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", min=1.0, help="Most seconds a check may "
                                           "take before it counts as failed.")] = 60.0,
    as_json: Json = False,
) -> None:
    """Check the installation, the models and the index, and say how to fix what is wrong."""
    from rag_cli.doctor import run_doctor

    env = env_of(ctx)
    printer = None if as_json else _Printer(env)
    report = run_doctor(lambda: settings_for(env, {}), models=not no_models, timeout=timeout,
                        on_check=printer.check if printer else None)
    if printer is None:
        env.print_json(report.to_dict())
    else:
        printer.summary(report)
    observe.timings("doctor", {**{c.name: c.seconds for c in report.checks}, "total": report.seconds},
                    failed=report.count(CheckStatus.FAIL), exit_code=report.exit_code)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _Printer:
    """Each check as it finishes (the model loads take seconds), then one summary line."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.group = ""

    def check(self, check: Check) -> None:
        env = self.env
        if check.group != self.group:
            self.group = check.group
            env.out.print(Text(check.group, style="bold")) if env.rich_stdout else env.line(f"{check.group}:")
        head = f"  {check.status:<5} {check.name}: {check.detail}"
        if env.rich_stdout:
            env.out.print(Text.assemble("  ", (f"{check.status:<5}", STYLES[check.status]),
                                        (f" {check.name}: ", "bold"), check.detail))
        else:
            env.line(head)
        if check.fix and check.status in (CheckStatus.FAIL, CheckStatus.WARN):
            env.out.print(Text(f"        fix: {check.fix}", style="cyan")) if env.rich_stdout else env.line(
                f"        fix: {check.fix}")

    def summary(self, report: DoctorReport) -> None:
        counts = ", ".join(f"{report.count(s)} {word}" for s, word in (
            (CheckStatus.OK, "ok"), (CheckStatus.WARN, "warnings"), (CheckStatus.FAIL, "failed"),
            (CheckStatus.SKIP, "skipped")) if report.count(s))
        line = f"{len(report.checks)} checks in {report.seconds:.1f} s: {counts}" + (
            "" if report.models_loaded else " (models not loaded: --no-models)")
        if report.exit_code:
            line += f"; exit code {report.exit_code}"
        self.env.out.print(Text(line, style="bold red" if report.exit_code else "bold")) if self.env.rich_stdout \
            else self.env.line(line)


def register(app: typer.Typer) -> None:
    app.command("doctor")(boundary(doctor))
