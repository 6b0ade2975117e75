"""The `rag` command line: help, version, `rag config` and `rag chunk-preview` (no model is loaded)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag_cli import __version__
from rag_cli.cli.app import app
from rag_cli.config import all_keys, find_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "samples"
FAQ = SAMPLES / "faq.txt"
PDF = SAMPLES / "recipes" / "country-loaf.pdf"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Variables that make Rich treat a pipe as a terminal, or colour plain output.
TERMINAL_VARS = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")


def clean_env(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith("RAG_") and k not in TERMINAL_VARS}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no RAG_* settings in the environment and no .rag.toml above it."""
    for name in list(os.environ):
        if name.startswith("RAG_") or name in TERMINAL_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    if find_config(tmp_path) is not None:
        pytest.skip(f"a .rag.toml above the temporary folder ({find_config(tmp_path)}) would leak into these tests")
    return tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def stderr_of(result) -> str:
    """stderr alone where this Click keeps it apart; the mixed output otherwise."""
    try:
        return result.stderr
    except ValueError:
        return result.output


def run(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# -- help and version ---------------------------------------------------------------------------

def test_help_lists_the_commands(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "--help")
    assert result.exit_code == 0
    for command in ("index", "chunk-preview", "config"):
        assert re.search(rf"^\s*{re.escape(command)}\s", result.stdout, re.M), command
    assert "--version" in result.stdout and "--config" in result.stdout


def test_no_arguments_shows_help(workdir: Path, runner: CliRunner) -> None:
    result = run(runner)
    assert result.exit_code in (0, 2)  # Click >= 8.2 exits 2 for no_args_is_help
    assert "chunk-preview" in result.output


def test_version(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"rag-cli {__version__}"


def test_command_help(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", "--help")
    assert result.exit_code == 0
    for option in ("--strategy", "--size", "--overlap", "--json"):
        assert option in result.stdout


# -- rag config -----------------------------------------------------------------------------------

def parse_plain_config(stdout: str) -> dict[str, tuple[str, str]]:
    """{key: (value text, source)} from the `key = value  # source` lines."""
    settings = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"([a-z_]+\.[a-z_]+) = (.*)  # (.+)", line)
        if match:
            settings[match.group(1)] = (match.group(2), match.group(3))
    return settings


def test_config_plain_lists_every_key_with_source(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "config")
    assert result.exit_code == 0, result.output
    assert not ANSI.search(result.stdout)
    assert "settings file: none" in result.stdout
    assert f"index folder: {workdir.resolve() / '.rag'}" in result.stdout
    settings = parse_plain_config(result.stdout)
    assert list(settings) == all_keys()
    assert all(source == "default" for _, source in settings.values())
    assert settings["chunking.size"][0] == "200"
    assert settings["chunking.context_header"][0] == "true"
    assert settings["index.path"][0] == "'.rag'"


def test_config_plain_shows_file_and_env_sources(workdir: Path, runner: CliRunner,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = workdir / ".rag.toml"
    config_file.write_text("[chunking]\noverlap = 20\nstrategy = 'sentence'\n", encoding="utf-8")
    monkeypatch.setenv("RAG_CHUNKING_SIZE", "321")
    result = run(runner, "config")
    assert result.exit_code == 0, result.output
    assert f"settings file: {config_file.resolve()}" in result.stdout
    settings = parse_plain_config(result.stdout)
    assert settings["chunking.size"] == ("321", "env RAG_CHUNKING_SIZE")
    assert settings["chunking.overlap"] == ("20", str(config_file.resolve()))
    assert settings["chunking.strategy"] == ("'sentence'", str(config_file.resolve()))
    assert settings["embedding.model"][1] == "default"


def test_config_json_shape(workdir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = workdir / ".rag.toml"
    config_file.write_text("[chunking]\noverlap = 20\n[index]\nexclude = ['drafts']\npath = 'idx'\n",
                           encoding="utf-8")
    monkeypatch.setenv("RAG_CHUNKING_SIZE", "321")
    sub = workdir / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)  # the file is found upward; the index sits beside it
    result = run(runner, "config", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"schema", "config_file", "index_dir", "settings"}
    assert doc["schema"] == "rag-cli/config/v1"
    assert doc["config_file"] == str(config_file.resolve())
    assert doc["index_dir"] == str((workdir / "idx").resolve())
    assert list(doc["settings"]) == all_keys()
    for key, entry in doc["settings"].items():
        assert set(entry) == {"value", "source"}, key
    s = doc["settings"]
    assert s["chunking.size"] == {"value": 321, "source": "env RAG_CHUNKING_SIZE"}
    assert s["chunking.overlap"] == {"value": 20, "source": str(config_file.resolve())}
    assert s["index.exclude"] == {"value": ["drafts"], "source": str(config_file.resolve())}
    assert s["chunking.context_header"] == {"value": True, "source": "default"}
    assert s["index.lock_timeout"] == {"value": 0.0, "source": "default"}


def test_config_option_picks_a_file(workdir: Path, runner: CliRunner) -> None:
    (workdir / ".rag.toml").write_text("[chunking]\nsize = 111\n", encoding="utf-8")
    other = workdir / "other.toml"
    other.write_text("[chunking]\nsize = 222\n", encoding="utf-8")
    doc = json.loads(run(runner, "--config", "other.toml", "config", "--json").stdout)
    assert doc["config_file"] == str(other.resolve())
    assert doc["settings"]["chunking.size"] == {"value": 222, "source": str(other.resolve())}


def test_bad_config_file_is_a_one_line_error(workdir: Path, runner: CliRunner) -> None:
    config_file = workdir / ".rag.toml"
    config_file.write_text("[chunking]\nsise = 300\n", encoding="utf-8")
    result = run(runner, "config")
    assert result.exit_code == 2
    assert result.stdout == ""
    err = stderr_of(result)
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert str(config_file.resolve()) in lines[0] and "chunking.sise" in lines[0]
    assert "Traceback" not in err
    assert re.search(r"^hint: .*\bsize\b", err, re.M)


def test_bad_config_fails_every_command(workdir: Path, runner: CliRunner) -> None:
    (workdir / ".rag.toml").write_text("[chunking\n", encoding="utf-8")
    result = run(runner, "chunk-preview", str(FAQ))
    assert result.exit_code == 2
    assert "TOML" in error_lines(stderr_of(result))[0]


def test_bad_env_value_is_an_error(workdir: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CHUNKING_SIZE", "lots")
    result = run(runner, "config")
    assert result.exit_code == 2
    line = error_lines(stderr_of(result))[0]
    assert "RAG_CHUNKING_SIZE" in line and "lots" in line


# -- rag chunk-preview ---------------------------------------------------------------------------

HEADER = re.compile(r"^── chunk (\d+) · (\d+) tokens · .*chars (\d+)-(\d+)", re.M)


def test_chunk_preview_plain(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", str(FAQ))
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{FAQ}: ")
    assert "strategy structure, size 200, overlap 32" in first
    headers = HEADER.findall(result.stdout)
    count = int(re.search(r": (\d+) chunks from 1 document", first).group(1))
    assert len(headers) == count >= 2
    assert [int(h[0]) for h in headers] == list(range(count))
    assert all(0 < int(h[1]) <= 200 for h in headers)
    assert "SOURDOUGH FREQUENTLY ASKED QUESTIONS" in result.stdout
    assert not ANSI.search(result.stdout)


def preview_json(runner: CliRunner, *args: str) -> dict:
    result = run(runner, "chunk-preview", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_chunk_preview_json_pdf(workdir: Path, runner: CliRunner) -> None:
    doc = preview_json(runner, str(PDF))
    assert doc["schema"] == "rag-cli/chunk-preview/v1"
    assert doc["path"] == str(PDF)
    assert (doc["strategy"], doc["size"], doc["overlap"], doc["documents"]) == ("structure", 200, 32, 1)
    assert "MiniLM" in doc["tokenizer"]
    chunks = doc["chunks"]
    assert len(chunks) >= 3
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert set(c) == {"index", "doc_id", "tokens", "start", "end", "page_start", "page_end", "ocr", "heading",
                          "text"}
        assert c["doc_id"] == "country-loaf.pdf"
        assert isinstance(c["page_start"], int) and isinstance(c["page_end"], int)
        assert 1 <= c["page_start"] <= c["page_end"]
        assert 0 < c["tokens"] <= doc["size"]
        assert c["start"] < c["end"] and c["text"].strip()
    pages = [c["page_start"] for c in chunks]
    assert pages == sorted(pages) and pages[0] == 1 and pages[-1] == 3  # the sample has 3 pages


def test_chunk_preview_pdf_plain_shows_pages(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", str(PDF))
    assert result.exit_code == 0, result.output
    assert re.search(r"^── chunk 0 · \d+ tokens · page 1 ·", result.stdout, re.M)


def test_chunk_preview_size_and_overlap_flags(workdir: Path, runner: CliRunner) -> None:
    default = preview_json(runner, str(FAQ))
    small = preview_json(runner, "--size", "64", "--overlap", "16", str(FAQ))
    assert (small["size"], small["overlap"]) == (64, 16)
    assert len(small["chunks"]) > len(default["chunks"])
    assert all(c["tokens"] <= 64 for c in small["chunks"])


def test_chunk_preview_settings_from_file_and_env(workdir: Path, runner: CliRunner,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / ".rag.toml").write_text("[chunking]\nsize = 64\noverlap = 8\n", encoding="utf-8")
    assert (preview_json(runner, str(FAQ))["size"], preview_json(runner, str(FAQ))["overlap"]) == (64, 8)
    monkeypatch.setenv("RAG_CHUNKING_SIZE", "100")
    assert preview_json(runner, str(FAQ))["size"] == 100
    assert preview_json(runner, "--size", "80", str(FAQ))["size"] == 80  # the flag wins


def test_chunk_preview_strategy_flag(workdir: Path, runner: CliRunner) -> None:
    doc = preview_json(runner, "--strategy", "fixed", "--size", "64", "--overlap", "0", str(FAQ))
    assert doc["strategy"] == "fixed"
    assert all(c["tokens"] <= 64 for c in doc["chunks"])


def test_chunk_preview_missing_file(workdir: Path, runner: CliRunner) -> None:
    missing = workdir / "nope.md"
    result = run(runner, "chunk-preview", str(missing))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = error_lines(stderr_of(result))
    assert len(lines) == 1 and str(missing) in lines[0]


def test_chunk_preview_unsupported_type(workdir: Path, runner: CliRunner) -> None:
    (workdir / "report.odt").write_bytes(b"PK\x03\x04")  # .docx is read since issue 19; OpenDocument is not
    result = run(runner, "chunk-preview", "report.odt")
    assert result.exit_code == 2
    err = stderr_of(result)
    assert "report.odt" in error_lines(err)[0] and ".odt" in error_lines(err)[0]
    assert re.search(r"^hint: supported: .*\.pdf", err, re.M)


def test_chunk_preview_bad_strategy(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", "--strategy", "nonsense", str(FAQ))
    assert result.exit_code == 2
    line = error_lines(stderr_of(result))[0]
    assert "chunking.strategy" in line and "nonsense" in line and "structure" in line


def test_chunk_preview_overlap_not_below_size(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", "--size", "64", "--overlap", "64", str(FAQ))
    assert result.exit_code == 2
    assert "overlap" in error_lines(stderr_of(result))[0]


def test_chunk_preview_bad_option_type(workdir: Path, runner: CliRunner) -> None:
    result = run(runner, "chunk-preview", "--size", "big", str(FAQ))
    assert result.exit_code == 2
    assert "--size" in stderr_of(result)


# -- real processes ----------------------------------------------------------------------------------

HEAVY = ("torch", "sentence_transformers", "chromadb", "llama_cpp", "watchfiles", "docx", "lxml", "mcp",
         "starlette", "uvicorn", "bs4", "ebooklib",
         "rapidocr_onnxruntime", "pypdfium2", "cv2")
# docx, lxml: .docx and HTML files only; bs4, ebooklib: HTML and EPUB only; mcp, starlette, uvicorn: `rag mcp` only;
# rapidocr_onnxruntime, pypdfium2, cv2: OCR of scanned PDF pages only


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level package names in a `python -X importtime` log."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


def python_env() -> dict[str, str]:
    env = clean_env(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.mark.slow
def test_cli_start_up_imports_no_heavy_library(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rag_cli.cli.app"],
                            capture_output=True, text=True, cwd=tmp_path, env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert {"rag_cli", "typer"} <= modules  # the log was read correctly
    assert not modules & set(HEAVY), f"heavy imports at start-up: {sorted(modules & set(HEAVY))}"


@pytest.mark.slow
def test_chunk_preview_imports_no_heavy_library(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "rag_cli", "chunk-preview", str(FAQ)],
                            capture_output=True, text=True, cwd=tmp_path, env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "tokenizers" in modules
    assert not modules & set(HEAVY), f"heavy imports in chunk-preview: {sorted(modules & set(HEAVY))}"


@pytest.mark.slow
def test_chunk_preview_subprocess_plain_when_piped(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rag_cli", "chunk-preview", str(FAQ)],
                            capture_output=True, text=True, cwd=tmp_path,
                            env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not ANSI.search(result.stdout), "escape codes in piped output"
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{FAQ}: ") and "chunks from 1 document(s)" in lines[0]
    assert HEADER.search(result.stdout)
    assert "SOURDOUGH FREQUENTLY ASKED QUESTIONS" in result.stdout


@pytest.mark.slow
def test_subprocess_error_exit_code_and_stderr(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rag_cli", "chunk-preview", "missing.txt"],
                            capture_output=True, text=True, cwd=tmp_path, env=python_env(), timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: missing.txt: no such file"]
