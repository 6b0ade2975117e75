"""`rag serve`"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_cli.cli.env import boundary, env_of
from rag_cli.cli.options import Json, WatchServing, parse_duration, settings_for
from rag_cli.errors import ExitCode, InputError


def _describe(st) -> str:  # noqa: ANN001 - a serve.client.ServeStatus
    from rag_cli.serve.client import ServeState

    d = st.details
    if st.live:
        requests = d.get("requests", {})
        line = (f"{st.state}: pid {st.pid} serves {st.index_dir} on {st.socket}; up {d.get('uptime', 0):.0f} s; "
                f"{requests.get('served', 0)} served, {requests.get('busy', 0)} busy, "
                f"{requests.get('refused', 0)} refused")
        return line + (f"; language model not loaded: {d['llm_error']}" if d.get("llm_error") else "")
    if st.state == ServeState.STALE:
        return f"stale: the server (pid {st.pid}) is gone; `rag serve --stop` removes its files"
    if st.state == ServeState.UNRESPONSIVE:
        return f"unresponsive: pid {st.pid} holds {st.index_dir} but does not answer ({d.get('reason')})"
    if d.get("was") in (ServeState.READY, ServeState.STARTING, ServeState.UNRESPONSIVE):
        return f"stopped: pid {d.get('pid_was')}"
    if d.get("was") == ServeState.STALE:
        return f"removed the files of a server that was gone (pid {d.get('pid_was')})"
    return f"not running: no `rag serve` for {st.index_dir}"


def serve(
    ctx: typer.Context,
    status: Annotated[bool, typer.Option("--status", help="Say whether a server is live and ready (exit 0 when "
                                         "ready, 7 when not).")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the server of this index (or remove the files of "
                                       "one that died).")] = False,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Do not load the language model at start (it loads on "
                                         "the first question that needs it).")] = False,
    watch: WatchServing = False,
    idle_timeout: Annotated[str | None, typer.Option("--idle-timeout", metavar="DURATION",
                                                     help="Stop after this long without a question "
                                                     "(90s, 30m, 2h).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Start in the background (log: .rag/serve.log), "
                                         "wait until it is ready, print its pid.")] = False,
    as_json: Json = False,
) -> None:
    """Keep the models and the index open, so that `rag ask` and `rag eval` answer without loading them."""
    env = env_of(ctx)
    if status and stop:
        raise InputError("--status and --stop cannot be used together")
    if (status or stop) and (watch or idle_timeout or detach or no_llm):
        raise InputError("--status and --stop take no other option but --json")
    idle = parse_duration(idle_timeout) if idle_timeout is not None else None
    settings = settings_for(env, {})
    if detach:
        import sys

        from rag_cli.serve.detach import start_detached

        started = start_detached(settings, [a for a in sys.argv[1:] if a != "--detach"])
        if as_json:
            env.print_json({"pid": started.pid, "log": str(started.log), "seconds": round(started.seconds, 3)})
        else:
            env.line(f"rag serve is ready in the background: pid {started.pid} (log: {started.log}); "
                     "`rag serve --stop` stops it")
        return
    if status or stop:
        from rag_cli.serve import client

        state = client.stop(settings) if stop else client.status(settings)
        env.print_json(state.to_dict()) if as_json else env.line(_describe(state))
        if (status and not state.ready) or (stop and state.live):
            raise typer.Exit(int(ExitCode.BUSY))
        return
    from rag_cli.serve.server import run

    run(settings, llm=not no_llm, on_event=lambda text: env.event(f"rag serve: {text}"), watch=watch,
        idle_timeout=idle)


def register(app: typer.Typer) -> None:
    app.command("serve")(boundary(serve))
