"""Finding the files to index under the paths given on the command line, and their document ids."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_cli.errors import InputError
from rag_cli.ingest.formats import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class FoundFile:
    path: Path  # absolute, symlinks not resolved
    root: Path  # the folder (or file) named on the command line
    rel: str  # the path relative to the root's folder, with forward slashes: the document id (assign_doc_ids)


@dataclass
class Walk:
    files: list[FoundFile] = field(default_factory=list)
    # (path, reason): unreadable folders, broken links, file names that are not UTF-8
    errors: list[tuple[str, str]] = field(default_factory=list)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    """fnmatch semantics (``*`` also crosses ``/``), against the relative path and the name;
    ``drafts`` and ``drafts/`` both name a folder at any depth."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        p = pattern.rstrip("/") or pattern
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p + "/*"):
            return True
    return False


def wanted(rel: str, *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether ``walk`` would take the file at ``rel`` (a path relative to its root, with forward
    slashes), by its name alone: no hidden part, no excluded folder on the way, a supported suffix,
    the globs. (Whether it is a readable regular file is for the walk to find out.)"""
    parts = rel.split("/")
    if any(part.startswith(".") for part in parts):
        return False
    if any(_matches("/".join(parts[:i]), exclude) for i in range(1, len(parts))):
        return False
    if Path(parts[-1]).suffix.lower() not in SUPPORTED_SUFFIXES or _matches(rel, exclude):
        return False
    return not include or _matches(rel, include)


def wanted_folder(rel: str, *, exclude: Sequence[str] = ()) -> bool:
    """Whether ``walk`` would enter the folder at ``rel`` (relative to its root)."""
    parts = rel.split("/")
    return not any(part.startswith(".") for part in parts) and not any(
        _matches("/".join(parts[:i]), exclude) for i in range(1, len(parts) + 1))


def walk(root: Path, *, include: Sequence[str] = (), exclude: Sequence[str] = (),
         skip: Sequence[Path] = ()) -> Walk:
    """Supported files under ``root`` (a folder or one file), in a stable order.

    Hidden files and folders, the folders in ``skip`` (the index itself) and anything that
    matches an ``exclude`` glob are left out; with ``include`` globs, a file must match one.
    Symbolic links are followed, once: a link loop is not walked twice. What cannot be read
    (a folder, a file link that loops, a name that is not UTF-8, a pipe) is listed in
    ``errors``; a dangling link is left out without a word (its target may come back).
    """
    root = Path(os.path.abspath(root))
    if not _is_utf8(str(root)):
        raise InputError(f"{shown(str(root))}: the path is not valid UTF-8", hint="rename it")
    result = Walk()
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise InputError(f"{root}: unsupported file type {root.suffix or '(no suffix)'!r}",
                             hint=f"supported: {' '.join(SUPPORTED_SUFFIXES)}")
        result.files.append(FoundFile(root, root, root.name))
        return result
    if not root.is_dir():
        raise InputError(f"{root}: no such file or folder")
    skip_real = {os.path.realpath(p) for p in skip}
    seen_dirs: set[tuple[int, int]] = set()

    def on_error(exc: OSError) -> None:
        result.errors.append((str(exc.filename or root), f"cannot read folder: {exc.strerror or exc}"))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=on_error):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop or a second link to one folder
            dirs[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".")
            and os.path.realpath(os.path.join(folder, d)) not in skip_real
            and not _matches(rel_folder + d, exclude)
        )
        for d in [d for d in dirs if not _is_utf8(d)]:
            # Its files' names could not be stored or printed: rename it, rather than index it half.
            dirs.remove(d)
            result.errors.append((shown(os.path.join(folder, d)), "folder name is not valid UTF-8 "
                                  "(rename it): its files are not indexed"))
        for name in sorted(names):
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            rel = rel_folder + name
            if _matches(rel, exclude) or (include and not _matches(rel, include)):
                continue
            path = Path(folder) / name
            problem = _problem(path, name)
            if problem is None:
                result.files.append(FoundFile(path, root, rel))
            elif problem:  # "": a dangling link, left out without a word (its target may come back)
                result.errors.append((shown(str(path)), problem))
    return result


def assign_doc_ids(files: Sequence[FoundFile], recorded: Mapping[str, str],
                   holder: Callable[[str], str | None] = lambda doc: None) -> dict[str, str]:
    """{path: document id} for ``files`` (in the order of the walk: the roots in the order given, each
    walked in its stable order), unique across the index.

    ``recorded`` is the manifest's {path: document id} of every file the index holds; ``holder(doc_id)``
    the path of a file whose chunks the manifest registers under that document id, if any. A file keeps
    the id it was given when first indexed, so that ids never flip between runs (they are in chunk ids,
    answer caches, citations, evaluation files). A new file's id is its path relative to its root, as
    ever, unless that id is taken (by a file of another root with the same relative path, recorded or
    earlier in ``files``, or by a document of another file: a JSONL record): then the root's folder name
    goes in front ("b/notes.md"), then its parents' ("x/b/notes.md") while those are taken too, and last a
    short hash of the path. So an index of one root keeps the relative paths. An id recorded for two files
    (by a version before ids were made unique) stays with the file whose chunks hold it, else the first
    in the walk; the other file gets a new id.
    """
    order = {str(f.path): i for i, f in enumerate(files)}
    claimants: dict[str, list[str]] = {}
    for path in sorted(recorded, key=lambda p: (order.get(p, len(order)), p)):
        claimants.setdefault(recorded[path], []).append(path)
    taken: set[str] = set()
    ids: dict[str, str] = {}
    for doc, paths in claimants.items():
        if not doc:
            continue
        owner = paths[0]
        if len(paths) > 1:
            held_by = holder(doc)
            owner = held_by if held_by in paths else owner
        taken.add(doc)
        if owner in order:
            ids[owner] = doc
    for f in files:
        key = str(f.path)
        if key in ids:
            continue
        doc = next(c for c in _id_candidates(f) if c not in taken and holder(c) in (None, key))
        taken.add(doc)
        ids[key] = doc
    return ids


def _id_candidates(f: FoundFile) -> Iterator[str]:
    """The relative path, then with more and more of the folders above the root in front, then with a
    hash of the absolute path (and a number: endless, so a free one is always found)."""
    yield f.rel
    folders = [p for p in f.path.parts[:-(f.rel.count("/") + 1)] if p != f.path.anchor]
    for i in range(len(folders) - 1, -1, -1):
        yield "/".join([*folders[i:], f.rel])
    digest = hashlib.sha256(str(f.path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    named = f"{folders[-1]}/{f.rel}" if folders else f.rel
    for n in itertools.count():
        yield f"{named}#{digest}" + (f"-{n}" if n else "")


def _problem(path: Path, name: str) -> str | None:
    """None when ``path`` (links followed) can be read as a file, else why not; "" for a
    dangling link."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ""
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device)"
    if not _is_utf8(name):
        return "file name is not valid UTF-8 (rename it)"
    return None


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """A path as it can be printed: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
