"""`rag models pull` against a local hub: a real HTTP server on 127.0.0.1 that answers as the
Hugging Face hub does (HEAD: a redirect with X-Linked-Etag, X-Linked-Size, X-Repo-Commit; GET:
the bytes, with Range support), pointed at through HF_ENDPOINT. And a pulled name used by routing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag_cli.errors import ConfigError, ExitCode, ModelDownloadError, ModelLoadError
from rag_cli.model_catalog import CatalogModel
from rag_cli.model_files import gguf_location, pulled_gguf_path
from rag_cli.model_pull import list_models, pull_model

REPO_ID = "local-owner/tiny-GGUF"
FILE = "tiny-q4_k_m.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# A file of several download chunks whose header passes the GGUF check (it is never loaded).
BODY = b"GGUF\x03\x00\x00\x00" + random.Random(20).randbytes(3 * (1 << 20) + 12345)
SHA = hashlib.sha256(BODY).hexdigest()


class Hub(ThreadingHTTPServer):
    """What the test tells the server to do, and what it saw."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.ranges: list[str | None] = []  # the Range header of each GET of the bytes
        self.drop_after: int | None = None  # the next GET sends only this many bytes, then closes
        self.body = BODY  # what GET sends
        self.stated_sha = SHA  # what HEAD states

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        if self.path != f"/{REPO_ID}/resolve/main/{FILE}":
            self.send_error(404)
            return
        self.send_response(302)  # an LFS file: the hub redirects to its CDN and states the sha256
        self.send_header("Location", f"/cdn/{FILE}")
        self.send_header("X-Linked-Etag", f'"{self.server.stated_sha}"')
        self.send_header("X-Linked-Size", str(len(BODY)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if self.path != f"/cdn/{FILE}":
            self.send_error(404)
            return
        hub, body = self.server, self.server.body
        rng = self.headers.get("Range")
        hub.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        part = body[start:]
        if hub.drop_after is not None:
            part, hub.drop_after = part[:hub.drop_after], None
            self.close_connection = True  # the connection drops before Content-Length bytes came
        self.wfile.write(part)
        self.wfile.flush()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The local hub, a catalogue entry for its file, and a private cache; downloads allowed."""
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([{"name": "tiny", "repo": REPO_ID, "file": FILE, "size_mb": 3, "ram_gb": 0.1,
                                    "licence": "MIT", "prompt_style": "chat", "template": "ChatML"}]))
    monkeypatch.setenv("RAG_MODEL_CATALOG", str(catalog))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # only here: the rest of the suite stays offline
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, int, int | None]] = []
        self.notes: list[str] = []

    def update(self, task: str, *, advance: int = 0, total: int | None = None) -> None:
        self.updates.append((task, advance, total))

    def note(self, text: str) -> None:
        self.notes.append(text)


def _target() -> Path:
    return pulled_gguf_path(CatalogModel("tiny", REPO_ID, FILE, 3, 0.1, "MIT", "chat", "ChatML"))


def _rag(*args: str) -> subprocess.CompletedProcess[str]:
    rag = Path(sys.executable).with_name("rag")
    return subprocess.run([str(rag), *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_a_pull_reports_progress_checks_the_hubs_sha256_and_resolves_by_name(hub: Hub) -> None:
    progress = Recorder()
    report = pull_model("tiny", progress)
    target = _target()
    assert target.read_bytes() == BODY and report.path == str(target)
    assert report.sha256 == SHA and report.checked_against == "hub" and not report.already_pulled
    assert report.downloaded_bytes == len(BODY) == report.size_bytes and report.resumed_from == 0
    assert {t for t, _, _ in progress.updates} == {"download"}
    assert sum(a for _, a, _ in progress.updates) == len(BODY) and progress.updates[-1][2] == len(BODY)
    assert len(progress.updates) > 3, "progress comes as the bytes do, not once at the end"
    assert hub.ranges == [None]
    assert not list(target.parent.glob("*.part*")), "no part file is left behind"
    assert json.loads(target.with_name(FILE + ".json").read_text())["commit"] == COMMIT
    assert gguf_location("tiny") == str(target)  # llm.model / llm.strong_model / --model accept the name
    again = pull_model("tiny")
    assert again.already_pulled and again.downloaded_bytes == 0 and again.sha256 == SHA and hub.ranges == [None]


@pytest.mark.slow
def test_rag_models_pull_prints_the_settings_and_rag_models_then_shows_it_pulled(hub: Hub) -> None:
    before = json.loads(_rag("models", "--json").stdout)
    tiny = next(m for m in before["models"] if m["name"] == "tiny")
    assert not tiny["pulled"] and tiny["checksum"] == "hub" and tiny["repo"] == REPO_ID
    assert {m["name"] for m in before["models"]} >= {"bundled", "smollm2", "qwen2.5-1.5b-instruct", "tiny"}
    done = _rag("models", "pull", "tiny")
    assert done.returncode == 0, done.stderr
    assert 'llm.strong_model = "tiny"' in done.stdout and "--model tiny" in done.stdout
    assert SHA in done.stdout and str(_target()) in done.stdout
    after = json.loads(_rag("models", "--json").stdout)
    assert next(m for m in after["models"] if m["name"] == "tiny")["pulled"] is True
    again = json.loads(_rag("models", "pull", "tiny", "--json").stdout)
    assert again["already_pulled"] and again["settings"][0] == 'llm.strong_model = "tiny"'


def test_an_interrupted_pull_resumes_with_a_range_request(hub: Hub) -> None:
    half = len(BODY) // 2
    hub.drop_after = half
    with pytest.raises(ModelDownloadError, match="interrupted") as cut:
        pull_model("tiny")
    assert "again" in (cut.value.hint or "") and cut.value.exit_code == ExitCode.MODEL
    part = _target().with_name(FILE + ".part")
    kept = part.stat().st_size  # what came before the connection dropped
    assert 0 < kept <= half and not _target().exists()
    progress = Recorder()
    report = pull_model("tiny", progress)
    assert hub.ranges == [None, f"bytes={kept}-"], "the second pull asks only for the missing bytes"
    assert report.resumed_from == kept and report.downloaded_bytes == len(BODY) - kept
    assert _target().read_bytes() == BODY and report.sha256 == SHA
    assert any("resuming" in n for n in progress.notes) and not part.exists()


def test_a_checksum_mismatch_is_rejected_and_leaves_no_file(hub: Hub) -> None:
    damaged = bytearray(BODY)
    damaged[len(BODY) // 3] ^= 0xFF
    hub.body = bytes(damaged)
    with pytest.raises(ModelDownloadError, match="checksum mismatch") as bad:
        pull_model("tiny")
    assert SHA in bad.value.message and bad.value.exit_code == ExitCode.MODEL
    assert not _target().exists() and not list(_target().parent.glob("*.part*"))
    with pytest.raises(ModelLoadError, match="not pulled yet: run `rag models pull tiny`"):
        gguf_location("tiny")


def test_a_pinned_checksum_the_hub_contradicts_is_refused_before_downloading(hub: Hub, tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps([{"name": "tiny", "repo": REPO_ID, "file": FILE,
                                                        "sha256": "0" * 64}]))
    with pytest.raises(ModelDownloadError, match="pinned"):
        pull_model("tiny")
    assert hub.ranges == [] and not _target().exists()
    (tmp_path / "catalog.json").write_text(json.dumps([{"name": "tiny", "repo": REPO_ID, "file": FILE,
                                                        "sha256": SHA}]))
    assert pull_model("tiny").checked_against == "pinned"


@pytest.mark.slow
def test_without_a_network_the_pull_fails_clearly_with_the_model_exit_code(hub: Hub,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    down = _rag("models", "pull", "tiny")
    assert down.returncode == ExitCode.MODEL == 5, down.stderr
    assert f"cannot reach {closed}" in down.stderr and "hint:" in down.stderr and "Traceback" not in down.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = _rag("models", "pull", "tiny")
    assert offline.returncode == ExitCode.MODEL and "HF_HUB_OFFLINE" in offline.stderr and "hint:" in offline.stderr
    assert not _target().exists()
    with pytest.raises(ConfigError, match="not in the model catalogue"):
        pull_model("no-such-model")


@pytest.mark.slow
def test_a_pulled_catalogue_name_as_strong_model_answers_the_hard_questions(tmp_path: Path, samples: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2 from its package placed in the cache as if pulled, under a catalogue name of its own."""
    from rag_cli.ask import Asker
    from rag_cli.indexer import index_paths
    from rag_cli.model_files import SMOLLM2_FILE, smollm2_gguf
    from tests.indexing_helpers import settings_in

    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([{"name": "smol-pulled", "repo": "local-owner/smol-GGUF", "file": SMOLLM2_FILE}]))
    monkeypatch.setenv("RAG_MODEL_CATALOG", str(catalog))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    entry = CatalogModel("smol-pulled", "local-owner/smol-GGUF", SMOLLM2_FILE, 0, 0, "", "chat", "")
    bundled = smollm2_gguf()
    assert bundled is not None
    pulled = pulled_gguf_path(entry)
    pulled.parent.mkdir(parents=True)
    shutil.copyfile(bundled, pulled)
    assert next(r for r in list_models().rows if r.name == "smol-pulled").pulled
    settings = settings_in(tmp_path, embedding__backend="hash", retrieval__min_score=0.0, ask__cache=False,
                           llm__strong_model="smol-pulled", llm__route_max_words=3, llm__max_tokens=8)
    index_paths(settings, [samples])
    asker = Asker(settings)
    hard = asker.ask("How often should I feed my sourdough starter when it lives on the counter?")
    assert hard.route == "hard" and hard.error is None and hard.completion_tokens > 0
    assert hard.model == SMOLLM2_FILE and asker.generators["smol-pulled"].location == str(pulled)
