"""What every doctor check shares: the four statuses, ``Found`` (what a check returns), and
``CheckState``, the state the check mixins read and fill in (``Doctor`` in ``__init__`` sets it up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag_cli.config import Settings
from rag_cli.index_dir import IndexPaths
from rag_cli.models import CheckStatus

# Short names for the checks.
OK, WARN, FAIL, SKIP = CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL, CheckStatus.SKIP


@dataclass
class Found:
    """What a check function returns; the runner adds the name, group and time."""

    status: CheckStatus
    detail: str
    fix: str = ""
    code: int = 0
    data: dict[str, Any] = field(default_factory=dict)


class CheckState:
    """The attributes the checks share; ``Doctor.__init__`` sets them, the settings and index
    checks fill them in for the checks after them."""

    load_settings: Callable[[], Settings]
    models: bool
    settings: Settings | None
    paths: IndexPaths | None
    index: dict[str, Any] | None  # what the index check learnt (None: no usable index)
    store: Any

    def _needs_index(self) -> Found | None:
        return Found(SKIP, "no usable index") if self.index is None or not self.index["build"] else None
