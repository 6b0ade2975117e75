"""Writing small JSON files so that no reader ever sees half of one, and a ``flock`` for the block
of code that appends to a shared file (standard library only)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path``: a new file (mode 0600, made with O_EXCL, so never a
    moment readable by others nor a followed link) in the same folder, then one rename over
    ``path``. The temporary file is removed if anything fails; the error is raised."""
    import tempfile  # here: `rag ask`'s fast path to `rag serve` imports this module, not this function

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def flocked(path: Path, *, shared: bool = False, mode: int = 0o600) -> Iterator[None]:
    """Hold a ``flock`` on ``path`` (created with ``mode``) for the block: exclusive, or ``shared``
    for readers. Each call opens its own descriptor, so threads of one process exclude each other
    as processes do; the kernel drops the lock of a killed process, so a crash never leaves it held."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
