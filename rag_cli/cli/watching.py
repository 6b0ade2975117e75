"""`rag index --watch`: the first pass, then a line per batch, until Ctrl-C or SIGTERM (the
watching itself is rag_cli.watch.Watcher)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.text import Text

from rag_cli import observe
from rag_cli.cli.env import Env
from rag_cli.cli.progress import RichProgress
from rag_cli.cli.render import render_index_report
from rag_cli.config import Settings
from rag_cli.watch import WatchBatch, Watcher


def _json_line(env: Env, data: dict[str, Any]) -> None:
    env.stdout.write(json.dumps({**data, "run_id": observe.run_id()}, ensure_ascii=False) + "\n")
    env.stdout.flush()


def render_batch(env: Env, batch: WatchBatch, *, as_json: bool) -> None:
    """One line per batch: Rich on a terminal, plain when piped, one JSON object with --json."""
    if as_json:
        _json_line(env, batch.to_dict())
        return
    if env.rich_stdout:
        env.out.print(Text(time.strftime("%H:%M:%S "), style="dim"), Text(batch.summary()), sep="")
    else:
        env.line(batch.summary())
    env.stdout.flush()


def watch_index(env: Env, settings: Settings, paths: list[Path], *, rebuild: bool, lock_timeout: float | None,
                as_json: bool) -> str:
    """Index ``paths`` (none: the roots indexed before), then watch them; returns why it stopped.
    Ctrl-C or SIGTERM: the batch being written is finished, then it stops (a second Ctrl-C
    abandons the batch at once: the index stays consistent, as after any interrupted run)."""
    watcher = Watcher(settings, paths or None, on_batch=lambda batch: render_batch(env, batch, as_json=as_json),
                      on_warning=env.warn)
    with RichProgress(env) as progress:
        report = watcher.index_all(rebuild=rebuild, lock_timeout=lock_timeout, progress=progress)
    if as_json:
        _json_line(env, report.to_dict())
    else:
        render_index_report(env, report, as_json=False)
        env.stdout.flush()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: leave now (exit 130)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        env.event("rag index: watching for changes (Ctrl-C stops)")
        reason = watcher.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    env.event(f"rag index: {reason} after {watcher.batches} batch{'' if watcher.batches == 1 else 'es'}")
    return reason
