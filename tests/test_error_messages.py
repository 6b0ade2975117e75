"""Clear errors, through the CLI: a bad settings file, a missing or damaged index, a model that
is not there or not a model. Each gets one `error: ...` line (and at most one `hint: ...`) that
names the file or key and says what to do, the documented exit code (README, Exit codes), and
never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from indexing_helpers import invoke
from rag_cli.errors import ExitCode

NO_SERVE = {"RAG_NO_SERVE": "1"}


def error_of(result, code: int) -> tuple[str, str]:
    """The (error, hint) lines of a failed command, checking the exit code and the form."""
    output = result.output + (result.stderr or "")
    assert "Traceback" not in output, output
    assert result.exit_code == code, (result.exit_code, output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) <= 1, lines
    return errors[0].removeprefix("error: "), (hints[0].removeprefix("hint: ") if hints else "")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("# Notes\n\nThe damson jam sets overnight.\n")
    return tmp_path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """A project with an index (hash embedder), for the commands that need one."""
    work = tmp_path_factory.mktemp("indexed")
    (work / "docs").mkdir()
    (work / "docs" / "notes.md").write_text("# Notes\n\nThe damson jam sets overnight.\n")
    assert invoke(["index", "docs"], work).exit_code == 0
    return work


def write_settings(folder: Path, text: str | bytes) -> Path:
    path = folder / ".rag.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# -- the settings file ----------------------------------------------------------------------

@pytest.mark.parametrize("text, message, hint", [
    ('[index\npath = ".rag"\n', "not valid TOML: Expected ']' at the end of a table declaration (at line 1",
     "fix that line"),
    ('[chunking]\nsize = \n', "not valid TOML", "fix that line"),
    ('[index]\npathx = ".rag"\n', "unknown key 'index.pathx'", "did you mean 'path'? valid keys in [index]: path,"),
    ("[chunkin]\nsize = 300\n", "unknown section [chunkin]", "did you mean 'chunking'? valid sections: index,"),
    ("size = 300\n", "'size' is not inside a [section]", "put it under [chunking]"),
    ("timeout = 5\n", "'timeout' is not inside a [section]", "put it under one of [llm], [serve], [store]"),
    ('[chunking]\nsize = "big"\n', "chunking.size must be int, got 'big'",
     "write it as a whole number, e.g. size = 200 under [chunking]"),
    ("[chunking]\nsize = 5\n", "chunking.size must be at least 16, got 5", ""),
    ('[chunking]\nstrategy = "words"\n', "chunking.strategy = 'words' is not one of structure, sentence, fixed", ""),
    ('[ask]\ncache = "yes"\n', "ask.cache must be bool, got 'yes'", "write it as true or false (no quotes)"),
    ('[index]\nexclude = "node_modules"\n', "index.exclude must be list of strings, got 'node_modules'",
     'e.g. exclude = ["node_modules", "__pycache__"] under [index]'),
    ("[llm]\nmodel = 5\n", "llm.model must be str, got 5", 'e.g. model = "bundled" under [llm]'),
    (b"\xff\xfe[chunking]\n", "not valid TOML: not UTF-8 text (byte 0)", "save the file as UTF-8"),
], ids=["syntax", "no-value", "unknown-key", "unknown-section", "outside-section", "outside-ambiguous",
        "wrong-type-int", "below-minimum", "not-a-choice", "wrong-type-bool", "wrong-type-list", "wrong-type-str",
        "not-utf8"])
@pytest.mark.parametrize("command", [["index", "docs"], ["config"]], ids=["index", "config"])
def test_a_bad_settings_file_is_one_line_naming_the_file(project: Path, text, message, hint, command) -> None:
    path = write_settings(project, text)
    error, got_hint = error_of(invoke(command, project), ExitCode.USAGE)
    assert error.startswith(f"{path}: "), error
    assert message in error, error
    assert hint in got_hint, got_hint


@pytest.mark.parametrize("variable, value, message, hint", [
    ("RAG_CHUNKING_SIZE", "abc", "env RAG_CHUNKING_SIZE: chunking.size must be int, got 'abc'",
     "e.g. RAG_CHUNKING_SIZE=200"),
    ("RAG_ASK_CACHE", "maybe", "env RAG_ASK_CACHE: ask.cache must be bool, got 'maybe'",
     "write it as true or false, e.g. RAG_ASK_CACHE=true"),
    ("RAG_RETRIEVAL_MODE", "fuzzy", "env RAG_RETRIEVAL_MODE: retrieval.mode = 'fuzzy' is not one of dense,", ""),
])
def test_a_bad_environment_variable_names_the_variable(project: Path, variable, value, message, hint) -> None:
    error, got_hint = error_of(invoke(["index", "docs"], project, **{variable: value}), ExitCode.USAGE)
    assert message in error and hint in got_hint


def test_a_settings_file_given_with_config_that_does_not_exist(project: Path) -> None:
    error, _ = error_of(invoke(["--config", "missing.toml", "index", "docs"], project), ExitCode.USAGE)
    assert error == f"settings file {project / 'missing.toml'} does not exist"


def test_a_path_to_index_that_does_not_exist(project: Path) -> None:
    error, _ = error_of(invoke(["index", "nope"], project), ExitCode.USAGE)
    assert "nope" in error and "no such file or folder" in error


# -- the index --------------------------------------------------------------------------------

def test_no_index_says_how_to_build_one(project: Path) -> None:
    error, hint = error_of(invoke(["ask", "--retrieve-only", "damson"], project, **NO_SERVE), ExitCode.INDEX)
    assert error == f"no index in {project / '.rag'}"
    assert "rag index" in hint


def test_an_index_built_with_another_model_says_what_to_run(indexed: Path) -> None:
    result = invoke(["ask", "--retrieve-only", "damson"], indexed, RAG_EMBEDDING_BACKEND="sentence-transformers",
                    **NO_SERVE)
    error, hint = error_of(result, ExitCode.INDEX)
    assert "was built with other settings" in error and "embedding.backend" in error
    assert "rag index --rebuild" in hint


@pytest.fixture
def damaged(indexed: Path, tmp_path: Path) -> Path:
    """A private copy of the indexed project, free to damage."""
    work = tmp_path / "damaged"
    shutil.copytree(indexed, work)
    return work


@pytest.mark.parametrize("command", [["ask", "--retrieve-only", "damson"], ["index", "docs"]], ids=["ask", "index"])
def test_a_manifest_of_garbage_bytes_is_a_damaged_index(damaged: Path, command) -> None:
    (damaged / ".rag" / "manifest.sqlite3").write_bytes(b"this is not a database " * 100)
    for suffix in ("-wal", "-shm"):
        (damaged / ".rag" / f"manifest.sqlite3{suffix}").unlink(missing_ok=True)
    error, hint = error_of(invoke(command, damaged, **NO_SERVE), ExitCode.INDEX)
    assert "manifest.sqlite3" in error and "rebuild" in (error + hint)


@pytest.mark.parametrize("command", [["ask", "--retrieve-only", "damson"], ["index", "docs"]], ids=["ask", "index"])
def test_a_deleted_vector_store_is_a_damaged_index(damaged: Path, command) -> None:
    shutil.rmtree(damaged / ".rag" / "chroma")
    error, hint = error_of(invoke(command, damaged, **NO_SERVE), ExitCode.INDEX)
    assert "chroma" in error and "rag index --rebuild" in hint


def test_rebuild_recovers_from_a_damaged_manifest_or_a_lost_store(damaged: Path) -> None:
    shutil.rmtree(damaged / ".rag" / "chroma")
    assert invoke(["index", "--rebuild"], damaged, **NO_SERVE).exit_code == 0
    assert "damson" in invoke(["ask", "--retrieve-only", "damson"], damaged, **NO_SERVE).stdout.lower()
    (damaged / ".rag" / "manifest.sqlite3").write_bytes(b"this is not a database " * 100)
    for suffix in ("-wal", "-shm"):
        (damaged / ".rag" / f"manifest.sqlite3{suffix}").unlink(missing_ok=True)
    assert invoke(["index", "--rebuild", "docs"], damaged, **NO_SERVE).exit_code == 0
    assert (damaged / ".rag" / "manifest.sqlite3.damaged").exists()  # set aside, not deleted
    assert "damson" in invoke(["ask", "--retrieve-only", "damson"], damaged, **NO_SERVE).stdout.lower()


# -- models --------------------------------------------------------------------------------

def ask_with_model(folder: Path, model: str | None = None, **env: str):
    args = ["ask", "what sets overnight?"] + (["--model", model] if model else [])
    return invoke(args, folder, **NO_SERVE, **env)


@pytest.mark.parametrize("model, message", [
    ("{tmp}/nope.gguf", "model file {tmp}/nope.gguf does not exist (set llm.model or --model to a .gguf file"),
    ("{tmp}/notes.txt", "{tmp}/notes.txt is not a GGUF model file (set llm.model or --model to a .gguf file"),
    ("{tmp}", "model {tmp} is a folder, not a GGUF file"),
    ("{tmp}/bad-header.gguf", "{tmp}/bad-header.gguf is not a valid GGUF model file (truncated"),
    ("gemma", "unknown model 'gemma': not a file, nor one of bundled, smollm2, gemma-270m"),
    ("hf:nope/model.gguf", "model 'hf:nope/model.gguf' is not of the form hf:OWNER/REPO/FILE.gguf"),
], ids=["missing", "not-gguf", "folder", "bad-header", "unknown-alias", "bad-hf-name"])
def test_a_model_flag_that_is_not_a_model(indexed: Path, tmp_path: Path, model: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "bad-header.gguf").write_bytes(b"GGUFgarbage that is no header")
    result = ask_with_model(indexed, model.format(tmp=tmp_path))
    error, _ = error_of(result, ExitCode.MODEL)
    assert message.format(tmp=tmp_path) in error, error
    assert "damson jam" in result.stdout, "the passages are printed instead"


def test_a_model_setting_that_does_not_exist(indexed: Path, tmp_path: Path) -> None:
    work = tmp_path / "with-settings"
    shutil.copytree(indexed, work)
    write_settings(work, '[llm]\nmodel = "/nope.gguf"\n')
    error, _ = error_of(ask_with_model(work), ExitCode.MODEL)
    assert "model file /nope.gguf does not exist" in error and "llm.model" in error


def test_an_unreadable_model_file(indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "locked.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00")
    real_open = Path.open

    def refuse(self, *args, **kwargs):  # chmod 000 does not stop root: refuse like the kernel would
        if self == model:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    error, hint = error_of(ask_with_model(indexed, str(model)), ExitCode.MODEL)
    assert f"cannot read model file {model}: Permission denied" in error


@pytest.mark.parametrize("setting, message", [
    ("./models/nope", "embedding model folder {work}/models/nope does not exist (embedding.model)"),
    ("{tmp}/notes.txt", "embedding.model {tmp}/notes.txt is a file, not a model folder"),
    ("{tmp}/empty-model", "{tmp}/empty-model has no tokenizer.json: not a sentence-transformers model folder"),
    ("nobody/no-such-model", "embedding model 'nobody/no-such-model' is neither a local folder nor in the hub cache"),
], ids=["missing-folder", "a-file", "no-tokenizer", "unknown-hub-name"])
def test_an_embedding_model_that_is_not_there(project: Path, tmp_path: Path, setting: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "empty-model").mkdir()
    value = setting.format(tmp=tmp_path)
    result = invoke(["index", "docs"], project, RAG_EMBEDDING_BACKEND="sentence-transformers",
                    RAG_EMBEDDING_MODEL=value, HF_HUB_OFFLINE="1")
    error, hint = error_of(result, ExitCode.MODEL)
    assert message.format(tmp=tmp_path, work=project) in error, error
    assert "embedding.model" in hint
