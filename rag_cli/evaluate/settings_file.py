"""Setting a few keys of one section of a .rag.toml in place, keeping everything else the user
wrote (other keys, comments, blank lines, order).

There is no TOML writer among the dependencies (tomllib only reads), so this is a careful
textual edit: the key's line is replaced in its section, or added at the section's end, or the
section is appended. The result is parsed again and must equal the original with just those keys
changed; when it does not (a key set through a dotted key or an inline table, a value spanning
lines), nothing is written and the error says what to set by hand."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rag_cli.errors import ConfigError

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


def _key_line(key: str) -> re.Pattern[str]:
    # the value up to an optional trailing comment; a value with "#" inside a string fails the check
    return re.compile(rf"""^(\s*)(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=\s*[^#]*?(\s*#.*)?$""")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (int, float)):
        raise TypeError(f"only numbers and booleans are written, not {value!r}")
    return repr(value)


def _edited(text: str, section: str, values: Mapping[str, Any], comment: str, replaces: str) -> str:
    lines = text.splitlines()
    headers = [(i, m.group(1).strip()) for i, line in enumerate(lines) if (m := _HEADER.match(line))]
    starts = [i for i, name in headers if name == section]
    new_lines = [f"{key} = {_value(v)}" for key, v in values.items()]
    if not starts:  # no such section: append it
        tail = ["", f"[{section}]", comment, *new_lines]
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines + tail if lines else tail[1:]) + "\n"
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    body = lines[start + 1: end]
    if replaces:  # an earlier run's comment line
        body = [line for line in body if not line.strip().startswith(replaces)]
    missing = []
    for key, v in values.items():
        pattern = _key_line(key)
        found = [i for i, line in enumerate(body) if pattern.match(line)]
        if found:
            m = pattern.match(body[found[0]])
            assert m is not None
            body[found[0]] = f"{m.group(1)}{key} = {_value(v)}{m.group(2) or ''}"
        else:
            missing.append(f"{key} = {_value(v)}")
    last = max((i for i, line in enumerate(body) if line.strip()), default=-1)  # before trailing blanks
    body[last + 1: last + 1] = missing
    first = min(i for i, line in enumerate(body) if any(_key_line(k).match(line) for k in values))
    body.insert(first, comment)
    return "\n".join(lines[: start + 1] + body + lines[end:]) + "\n"


def set_keys(path: Path, section: str, values: Mapping[str, Any], comment: str, *, replaces: str = "") -> None:
    """Set ``section.key = value`` for each of ``values`` (numbers or booleans) in the settings file ``path``
    (created when missing), with the comment line ``comment`` (starting "# ") above them; comment
    lines of that section starting with ``replaces`` (an earlier run's) are dropped. ConfigError
    when the file cannot be edited safely; the file is then unchanged."""
    by_hand = ", ".join(f"{section}.{k} = {_value(v)}" for k, v in values.items())
    hint = f"set {by_hand} in {path} by hand"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        original = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as TOML, so it was not changed ({exc})", hint=hint) from None
    new_text = _edited(text, section, values, comment, replaces)
    expected = {**original, section: {**original.get(section, {}), **values}}
    try:
        ok = tomllib.loads(new_text) == expected
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise ConfigError(f"{path}: cannot set {by_hand} safely in this file's layout, so it was not changed",
                          hint=hint)
    fd, tmp = tempfile.mkstemp(prefix=".rag.toml.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
