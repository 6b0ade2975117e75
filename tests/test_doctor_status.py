"""`rag doctor` and `rag status`: a healthy samples index, then broken ones, each failure named with
its fix; the JSON shapes pinned; one run with the real bundled models; the installed `rag` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rag_cli.ingest.manifest import Manifest
from tests.conftest import REPO, SAMPLES
from tests.indexing_helpers import invoke, settings_in

CHECKS = ["settings", "python", "packages", "llama-cpp", "onnxruntime", "embedding runtime", "embedding model",
          "language model", "index", "build record", "run state", "lock", "vector store", "keyword index", "counts",
          "disk space", "folder permissions"]
REPORT_KEYS = {"schema", "ok", "exit_code", "index_dir", "store", "models_loaded", "seconds", "counts", "checks"}
CHECK_KEYS = {"name", "group", "status", "detail", "fix", "exit_code", "seconds", "data"}
STATUS_KEYS = {"schema", "index_dir", "store", "size_bytes", "documents", "files", "chunks", "roots", "updated",
               "dirty", "writer_pid", "schema_version", "embedding", "chunking", "llm", "changed_settings", "serve",
               "query_log"}
HOLDER = """
import sys, time
from pathlib import Path
from rag_cli.index_dir import IndexLock
with IndexLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples indexed once with the hash embedder; each test works on a copy."""
    work = tmp_path_factory.mktemp("built")
    shutil.copytree(SAMPLES, work / "docs")
    result = invoke(["index", "docs"], work)
    assert result.exit_code == 0, result.output
    return work


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(built, target)
    return target


def doctor(cwd: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    result = invoke(["doctor", "--no-models", "--json", *args], cwd, **env)
    assert result.exit_code != 1, result.output  # never a bug's traceback
    return result.exit_code, json.loads(result.stdout)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def not_ok(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"] if c["status"] not in ("ok", "skip")}


def failed_checks(report: dict[str, Any]) -> list[str]:
    return [c["name"] for c in report["checks"] if c["status"] == "fail"]


def set_updated(project: Path, value: Any) -> None:
    manifest = Manifest(project / ".rag" / "manifest.sqlite3")
    try:
        manifest.set_meta("updated", value)
    finally:
        manifest.close()


# -- healthy --------------------------------------------------------------------------------------------

def test_doctor_on_a_healthy_index(project: Path) -> None:
    code, report = doctor(project)
    assert code == 0 and report["ok"] is True and report["exit_code"] == 0
    assert set(report) == REPORT_KEYS and report["schema"] == "rag-cli/doctor/v1"
    assert [c["name"] for c in report["checks"]] == CHECKS
    for c in report["checks"]:
        assert set(c) == CHECK_KEYS
        assert c["status"] in ("ok", "skip"), c
        assert c["fix"] is None and c["exit_code"] == 0
    assert check(report, "embedding runtime")["status"] == "skip"  # the hash embedder has no model
    assert report["models_loaded"] is False and report["store"] is None
    assert report["index_dir"] == str(project / ".rag")
    counts = check(report, "counts")["data"]
    assert set(counts) == {"manifest", "vector_store", "keyword_index"} and len(set(counts.values())) == 1
    assert check(report, "folder permissions")["data"]["mode"] == "0700"
    assert check(report, "packages")["data"]["versions"]["chromadb"]
    assert report["counts"]["fail"] == 0


def test_doctor_plain_output(project: Path) -> None:
    result = invoke(["doctor", "--no-models"], project)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "settings:" and "installation:" in lines and "index:" in lines
    assert any(line.startswith("  ok    vector store: ") for line in lines)
    assert lines[-1].startswith(f"{len(CHECKS)} checks in ") and "(models not loaded: --no-models)" in lines[-1]
    assert "fix:" not in result.stdout


def test_status_json_and_plain(project: Path) -> None:
    result = invoke(["status", "--json"], project)
    assert result.exit_code == 0, result.output
    st = json.loads(result.stdout)
    assert set(st) == STATUS_KEYS and st["schema"] == "rag-cli/status/v1"
    assert st["documents"] == 6 and st["files"] == {"total": 6, "ok": 6, "pending": 0, "failed": 0, "skipped": 0}
    assert st["chunks"] > 6 and st["size_bytes"] > 0 and st["dirty"] is False and st["writer_pid"] is None
    assert st["embedding"]["model"] == "hash-embedder" and st["embedding"]["dimension"] == 64
    assert st["chunking"] == {"strategy": "structure", "size": 200, "overlap": 32, "min_size": 48,
                              "context_header": True}
    assert st["llm"] == {"model": "bundled", "strong_model": "", "url": ""}
    assert st["changed_settings"] == [{"key": "embedding.backend", "value": "hash", "default": "sentence-transformers",
                                       "source": "env RAG_EMBEDDING_BACKEND"}]
    assert st["serve"]["state"] == "not running" and isinstance(st["updated"], float)
    assert st["roots"] and st["store"] is None
    assert st["query_log"] == {"enabled": False, "path": str(project / ".rag" / "queries.jsonl"), "size_bytes": 0}
    plain = invoke(["status"], project).stdout
    assert plain.splitlines()[0].startswith(f"index     {project / '.rag'} (")
    assert "contents  6 files, 6 documents," in plain and "embedding hash-embedder (hash, 64 dimensions)" in plain
    assert "embedding.backend = 'hash' (env RAG_EMBEDDING_BACKEND)" in plain and "serve     not running" in plain
    assert "query log off (ask.log)" in plain


def test_no_index(tmp_path: Path) -> None:
    result = invoke(["status"], tmp_path)
    assert result.exit_code == 4
    assert "no index in" in result.output and "rag index PATH" in result.output
    code, report = doctor(tmp_path)
    assert code == 4
    index = check(report, "index")
    assert index["status"] == "fail" and index["exit_code"] == 4 and "rag index PATH" in index["fix"]
    assert check(report, "counts")["status"] == "skip" and check(report, "lock")["status"] == "ok"


# -- broken ---------------------------------------------------------------------------------------------

def test_missing_vector_store(project: Path) -> None:
    shutil.rmtree(project / ".rag" / "chroma")
    code, report = doctor(project)
    assert code == 4 and not_ok(report) == {"vector store": "fail"}
    failed = check(report, "vector store")
    assert "vector store is missing" in failed["detail"] and failed["fix"] == "run `rag index --rebuild` to rebuild it"
    assert not (project / ".rag" / "chroma").exists()  # the doctor created nothing


def test_damaged_manifest(project: Path) -> None:
    (project / ".rag" / "manifest.sqlite3").write_bytes(b"not a database" * 100)
    for name in ("manifest.sqlite3-wal", "manifest.sqlite3-shm"):
        (project / ".rag" / name).unlink(missing_ok=True)
    code, report = doctor(project)
    assert code == 4 and failed_checks(report) == ["index"]
    assert "is damaged" in check(report, "index")["detail"]
    assert "rag index --rebuild PATH" in check(report, "index")["fix"]
    result = invoke(["status"], project)
    assert result.exit_code == 4 and "is damaged" in result.output


def test_corrupt_keyword_index(project: Path) -> None:
    (project / ".rag" / "keyword" / "chunks.json").write_text("{not json")
    code, report = doctor(project)
    assert code == 4 and not_ok(report) == {"keyword index": "fail"}
    failed = check(report, "keyword index")
    assert "damaged" in failed["detail"] and "rag index" in failed["fix"] and "delete" in failed["fix"]


def test_keyword_index_that_disagrees_with_the_store(project: Path) -> None:
    path = project / ".rag" / "keyword" / "chunks.json"
    data = json.loads(path.read_text())
    data["ids"], data["metas"] = data["ids"][:-1], data["metas"][:-1]
    path.write_text(json.dumps(data))
    code, report = doctor(project)
    assert code == 4 and not_ok(report) == {"counts": "fail"}
    failed = check(report, "counts")
    assert "disagree" in failed["detail"] and "keyword" in failed["fix"]


def test_dirty_stamp_is_an_interrupted_run(project: Path) -> None:
    set_updated(project, f"dirty:{time.time()}")
    code, report = doctor(project)
    assert code == 4 and not_ok(report) == {"run state": "fail"}
    failed = check(report, "run state")
    assert "interrupted" in failed["detail"] and failed["fix"] == "run `rag index` to finish it"
    st = json.loads(invoke(["status", "--json"], project).stdout)
    assert st["dirty"] is True and st["writer_pid"] is None
    assert "a `rag index` run was interrupted: run `rag index` to finish it" in invoke(["status"], project).stdout


def test_lock_held_by_another_process(project: Path) -> None:
    set_updated(project, f"dirty:{time.time()}")  # what a run that is writing looks like
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project / ".rag" / "lock")], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, report = doctor(project)
        st = json.loads(invoke(["status", "--json"], project).stdout)
    finally:
        holder.kill()
        holder.wait()
    assert code == 0 and not_ok(report) == {"lock": "warn", "run state": "warn"}
    lock = check(report, "lock")
    assert f"pid {holder.pid}" in lock["detail"] and lock["data"]["pid"] == holder.pid and "wait" in lock["fix"]
    assert f"(pid {holder.pid}) is writing now" in check(report, "run state")["detail"]
    assert st["writer_pid"] == holder.pid and st["dirty"] is True
    code, report = doctor(project)  # the kernel dropped the lock with the process
    assert check(report, "lock")["status"] == "ok" and check(report, "run state")["status"] == "fail"


@pytest.mark.parametrize(("env", "refuses"), [
    ({"RAG_CHUNKING_SIZE": "120"}, "`rag index` refuses it (searching works)"),
    ({"RAG_EMBEDDING_BACKEND": "sentence-transformers"}, "searching refuses it"),
])
def test_settings_that_differ_from_the_build(project: Path, env: dict[str, str], refuses: str) -> None:
    code, report = doctor(project, **env)
    assert code == 4 and failed_checks(report) == ["build record"]
    failed = check(report, "build record")
    assert failed["detail"].startswith(refuses + ": the index in ") and "rag index --rebuild" in failed["fix"]
    key = "chunking.size" if "RAG_CHUNKING_SIZE" in env else "embedding.backend"
    assert f"{key}: index has" in failed["detail"]


def test_missing_gguf(project: Path) -> None:
    code, report = doctor(project, RAG_LLM_MODEL="models/missing.gguf")
    assert code == 5 and not_ok(report) == {"language model": "fail"}
    failed = check(report, "language model")
    assert "missing.gguf does not exist" in failed["detail"] and "llm.model" in failed["fix"]


def test_bad_settings_still_check_the_installation(project: Path) -> None:
    (project / ".rag.toml").write_text('[chunking]\nsize = "big"\n')
    code, report = doctor(project)
    assert code == 2 and not_ok(report) == {"settings": "fail"}
    assert "chunking.size must be int" in check(report, "settings")["detail"] and check(report, "settings")["fix"]
    assert check(report, "packages")["status"] == "ok" and check(report, "index")["status"] == "skip"


def test_folder_permissions_and_disk_space(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(project / ".rag", 0o755)
    code, report = doctor(project)
    assert code == 0 and not_ok(report) == {"folder permissions": "warn"}
    assert check(report, "folder permissions")["fix"] == f"chmod 700 {project / '.rag'}"
    import rag_cli.doctor.storage

    monkeypatch.setattr(rag_cli.doctor.storage.shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=10 << 30, used=10 << 30, free=50 << 20))
    code, report = doctor(project)
    assert code == 4 and check(report, "disk space")["status"] == "fail" and "50.0 MiB free" in check(
        report, "disk space")["detail"]


def test_missing_package(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rag_cli.doctor.install

    real = rag_cli.doctor.install._version
    monkeypatch.setattr(rag_cli.doctor.install, "_version", lambda name: None if name == "bm25s" else real(name))
    code, report = doctor(project)
    assert code == 4 and failed_checks(report) == ["packages"]
    failed = check(report, "packages")
    assert "bm25s missing (needs bm25s>=" in failed["detail"] and failed["fix"].startswith("pip install 'bm25s>=")


def test_a_stuck_check_is_bounded(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_cli.doctor import Doctor, Found

    def stuck(self: Doctor) -> Found:
        time.sleep(5)
        return Found("ok", "never")

    monkeypatch.setattr(Doctor, "check_lock", stuck)
    started = time.monotonic()
    code, report = doctor(project, "--timeout", "1")
    assert time.monotonic() - started < 4.5
    assert code == 4 and check(report, "lock")["detail"] == "did not finish within 1 s"


def test_llm_url_server(project: Path) -> None:
    from tests.fake_llm_server import FakeLlmServer, free_port

    with FakeLlmServer(models=["served-model"]) as server:
        code, report = doctor(project, RAG_LLM_URL=server.url)
    assert code == 0
    llm = check(report, "language model")
    assert llm["status"] == "ok" and llm["data"]["model"] == "served-model" and server.url in llm["detail"]
    code, report = doctor(project, RAG_LLM_URL=f"http://127.0.0.1:{free_port()}/v1")
    assert code == 9 and not_ok(report) == {"language model": "fail"}
    assert "could not be reached" in check(report, "language model")["detail"]


def test_index_on_a_chroma_server(project: Path, tmp_path: Path) -> None:
    from rag_cli.testing.chroma_server import ChromaServer, free_port

    with ChromaServer(tmp_path / "chroma-data") as server:
        assert invoke(["index", "--to", server.url], project).exit_code == 0
        code, report = doctor(project, RAG_STORE_URL=server.url)
        st = json.loads(invoke(["status", "--json"], project, RAG_STORE_URL=server.url).stdout)
        reader = tmp_path / "reader"
        reader.mkdir()
        reader_code, reader_report = doctor(reader, RAG_STORE_URL=server.url)
    assert code == 0 and report["store"].startswith(f"on the Chroma server {server.url}")
    assert check(report, "index")["data"]["this_folder_writes"] is True
    assert check(report, "counts")["status"] == "ok" and len(set(check(report, "counts")["data"].values())) == 1
    assert st["store"] == report["store"] and st["chunks"] == check(report, "vector store")["data"]["chunks"]
    assert st["documents"] == 6 and st["files"]["total"] == 6 and st["files"]["failed"] is None
    assert reader_code == 0 and check(reader_report, "keyword index")["status"] == "ok"  # built on the first question
    code, report = doctor(project, RAG_STORE_URL=f"http://127.0.0.1:{free_port()}")
    assert code == 4 and check(report, "index")["status"] == "fail" and "store.url" in check(report, "index")["fix"]


# -- real models and real processes -----------------------------------------------------------------------

@pytest.mark.slow
def test_doctor_with_the_real_bundled_models(samples: Path, tmp_path: Path, real_embedder) -> None:
    from rag_cli.indexer import index_paths

    settings = settings_in(tmp_path)
    index_paths(settings, [samples], embedder=real_embedder)
    result = invoke(["doctor", "--json"], tmp_path, RAG_EMBEDDING_BACKEND="sentence-transformers")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["models_loaded"] is True, not_ok(report)
    assert all(c["status"] == "ok" for c in report["checks"]), not_ok(report)
    embedding = check(report, "embedding model")["data"]
    assert embedding["dimension"] == 384 and embedding["runtime"] == "onnx"  # the export real_embedder made
    llm = check(report, "language model")["data"]
    assert llm["path"].endswith(".gguf") and llm["load_seconds"] > 0 and llm["style"] in ("chat", "completion")
    assert check(report, "build record")["data"]["recorded"]["embedding.dimension"] == 384


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "RAG_EMBEDDING_BACKEND": "hash", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_installed_rag_command(project: Path) -> None:
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or shutil.which("rag")
    assert rag is not None, "the rag command is not installed (pip install -e .)"
    result = subprocess.run([rag, "doctor", "--no-models"], capture_output=True, text=True, cwd=project,
                            env=_clean_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{len(CHECKS)} checks in ")
    assert "\x1b[" not in result.stdout  # plain text when piped
    (project / ".rag" / "chroma").rename(project / ".rag" / "chroma-gone")
    result = subprocess.run([rag, "doctor", "--no-models", "--json"], capture_output=True, text=True, cwd=project,
                            env=_clean_env(), timeout=120)
    assert result.returncode == 4 and check(json.loads(result.stdout), "vector store")["status"] == "fail"


@pytest.mark.slow
def test_status_imports_nothing_heavy(project: Path) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "rag_cli", "status"], capture_output=True,
                            text=True, cwd=project, env={**_clean_env(), "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "rag_cli" in modules
    heavy = {"chromadb", "torch", "sentence_transformers", "llama_cpp", "onnxruntime", "numpy", "bm25s"} & modules
    assert not heavy, f"`rag status` imported {sorted(heavy)}"
