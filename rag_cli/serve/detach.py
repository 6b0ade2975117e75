"""`rag serve --detach`: the same `rag serve` in the background, started and waited for.

The server runs as a child process in a session of its own (``start_new_session``: no terminal,
no SIGINT from the shell's Ctrl-C, not killed when the shell exits), with stdin from /dev/null
and stdout and stderr appended to ``<index>/serve.log`` (0600). The parent waits until the server
says ready on its socket, or until the child exits (its log's last lines are the error), then
returns. It is stopped like any server: `rag serve --stop`, or SIGTERM to its pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag_cli.config import Settings
from rag_cli.errors import ExitCode, RagError
from rag_cli.index_record import prepare_folder
from rag_cli.serve import client
from rag_cli.serve.protocol import log_path

LOG_TAIL = 20  # lines of the log shown when the server did not start


class ServeStartError(RagError):
    """A detached `rag serve` exited before it was ready (its exit code is kept)."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = int(ExitCode.ERROR)) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = ExitCode(exit_code) if exit_code in set(ExitCode) else ExitCode.ERROR


@dataclass(frozen=True)
class Detached:
    pid: int
    log: Path
    seconds: float  # until it was ready


def start_detached(settings: Settings, serve_args: Sequence[str], *, timeout: float = 300.0) -> Detached:
    """Start `python -m rag_cli SERVE_ARGS` (a `rag serve` command line without --detach) in the
    background and wait up to ``timeout`` seconds for it to be ready."""
    paths = prepare_folder(settings)  # IndexNotFound here, not in a log file
    log = log_path(paths.root)
    started = time.monotonic()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    offset = os.lseek(fd, 0, os.SEEK_END)
    try:
        os.write(fd, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} rag {' '.join(serve_args)}\n".encode())
        child = subprocess.Popen([sys.executable, "-m", "rag_cli", *serve_args], stdin=subprocess.DEVNULL,
                                 stdout=fd, stderr=fd, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    while True:
        code = child.poll()
        if code is not None:
            tail = _tail(log, offset)
            raise ServeStartError(f"`rag serve` exited with code {code} before it was ready"
                                  + (f":\n{tail}" if tail else ""), hint=f"its log: {log}", exit_code=code)
        state = client.status(settings)
        if state.ready and state.pid == child.pid:
            return Detached(child.pid, log, time.monotonic() - started)
        if time.monotonic() - started > timeout:
            raise ServeStartError(f"`rag serve` (pid {child.pid}) is not ready after {timeout:.0f} s; it is "
                                  "still starting", hint=f"`rag serve --status` tells when it is; its log: {log}")
        time.sleep(0.2)


def _tail(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-LOG_TAIL:] if not line.startswith("--- "))
