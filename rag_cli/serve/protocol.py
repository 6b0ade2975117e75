"""What client and server of `rag serve` share: the files, the wire format, settings as data.

Standard library only: `rag ask` imports this on its fast path, before anything heavy.

Files (the index folder is 0700; see ``IndexPaths.create``)::

    <index>/serve.json   0600  {"pid", "socket", "token", "index_dir", "started", "protocol"}
    <index>/serve.sock   0600  the Unix socket, when its path fits AF_UNIX's 107 bytes; else
                               $XDG_RUNTIME_DIR/rag-cli/<hash>.sock or /tmp/rag-cli-<uid>/<hash>.sock
                               (folders 0700, checked to be the user's own)
    <index>/serve.lock         flock held by the running server (the kernel drops it when it dies)
    <index>/serve.log    0600  stdout and stderr of a server started with `rag serve --detach` (appended)

Wire format: one JSON object a line, both ways. The client sends one request
``{"protocol": 1, "token": ..., "op": ..., ...}`` and reads lines, each with a ``type``:
``queued`` -> ``started`` -> ``text``* -> ``result``, or at any point a final ``busy`` or
``error`` (the client then works in-process). Control ops answer one ``pong``/``status``/
``stopping`` line.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from rag_cli.fileio import write_json_atomically

PROTOCOL = 1
STATE_NAME = "serve.json"
SOCKET_NAME = "serve.sock"
LOCK_NAME = "serve.lock"
LOG_NAME = "serve.log"
SUN_PATH_MAX = 107  # bytes of a Unix socket path (sun_path is 108 with the NUL)
MAX_REQUEST = 4 << 20  # the server drops a request line longer than this


def state_path(index_dir: Path) -> Path:
    return index_dir / STATE_NAME


def log_path(index_dir: Path) -> Path:
    return index_dir / LOG_NAME


def lock_path(index_dir: Path) -> Path:
    return index_dir / LOCK_NAME


def socket_path(index_dir: Path) -> Path:
    """Where the server of ``index_dir`` listens: in the index folder when the path fits, else a
    hashed name in a private runtime folder (created and checked by ``private_dir``)."""
    beside = index_dir / SOCKET_NAME
    if len(os.fsencode(str(beside))) <= SUN_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(str(index_dir))).hexdigest()[:20]
    return private_dir() / f"{digest}.sock"


def private_dir() -> Path:
    """A folder only this user can enter: $XDG_RUNTIME_DIR/rag-cli, else /tmp/rag-cli-<uid>.
    Refuses (PermissionError) a folder that is a symlink, someone else's, or open to others."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "rag-cli" if runtime and os.path.isdir(runtime) else Path(f"/tmp/rag-cli-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a private folder of this user (mode {oct(info.st_mode & 0o777)})")
    return folder


def private_file_ok(info: os.stat_result) -> bool:
    """Owned by this user and closed to everyone else (what a token or socket must be)."""
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def read_state(index_dir: Path) -> dict[str, Any] | None:
    """The running server's record, or None (none, unreadable, or not private to this user: a
    state file others could have written is never trusted)."""
    try:
        fd = os.open(state_path(index_dir), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not private_file_ok(os.fstat(fd)):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read(1 << 16) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or not {"pid", "socket", "token"} <= set(data):
        return None
    return data


def write_state(index_dir: Path, state: dict[str, Any]) -> None:
    """Atomically, created 0600 (never a moment readable by others)."""
    write_json_atomically(state_path(index_dir), state)


def flock_held(path: Path) -> bool:
    """Whether a process holds an exclusive ``flock`` on ``path``: probed with a non-blocking
    shared lock, released at once (the kernel frees a lock when its holder dies)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    return False


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """The client's effective settings as data: every key's value, and the folders relative
    paths are taken from (the server rebuilds them with ``settings_from_dict``)."""
    from rag_cli.config import all_keys

    return {"values": {key: settings.get(key) for key in all_keys()}, "base_dir": str(settings.base_dir),
            "config_file": str(settings.config_file) if settings.config_file else None}


def settings_from_dict(data: dict[str, Any]) -> Any:
    """Settings from ``settings_to_dict``, every value checked as a settings file's would be."""
    from rag_cli.config import Settings

    values = data["values"]  # a key this server does not know is a ConfigError: the client works in-process
    config_file = Path(data["config_file"]) if data.get("config_file") else None
    return Settings(base_dir=Path(data["base_dir"]), config_file=config_file).with_values(values, "client")
