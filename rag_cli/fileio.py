"""Writing small JSON files so that no reader ever sees half of one (standard library only)."""

from __future__ import annotations

import json
import os
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
