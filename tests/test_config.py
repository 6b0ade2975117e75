"""Settings: defaults < .rag.toml < RAG_* environment < flags, each value with its source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag_cli import config
from rag_cli.config import (
    Settings,
    all_keys,
    describe,
    env_name,
    find_config,
    load_settings,
    read_config_file,
)
from rag_cli.errors import ConfigError, ExitCode

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".rag.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder with no .rag.toml above it (checked, so a stray file cannot leak in)."""
    folder = tmp_path / "project"
    folder.mkdir()
    if find_config(folder) is not None:
        pytest.skip(f"a .rag.toml above the temporary folder ({find_config(folder)}) would leak into these tests")
    return folder


def config_error(cwd: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(cwd, env=kwargs.pop("env", {}), **kwargs)
    assert info.value.exit_code == ExitCode.USAGE == 2
    return info.value


# -- defaults and sources ----------------------------------------------------------------

def test_defaults_everywhere_with_source_default(project: Path) -> None:
    settings = load_settings(project, env={})
    assert settings.config_file is None
    assert settings == Settings(base_dir=project.resolve(), sources={})
    assert [k for k, _, _ in settings.items()] == all_keys()
    for key, value, source in settings.items():
        assert source == "default", key
        assert value == describe(key)[1], key
    assert settings.chunking.size == 200
    assert settings.embedding.model == config.DEFAULT_EMBEDDING_MODEL


def test_every_key_has_help_and_an_env_name() -> None:
    keys = all_keys()
    assert len(keys) == len(set(keys))
    assert {"index.path", "chunking.size", "embedding.model", "index.lock_timeout"} <= set(keys)
    for key in keys:
        _, _, help_text = describe(key)
        assert help_text.strip(), key
        assert re.fullmatch(r"RAG_[A-Z_]+", env_name(key)), key
    assert env_name("chunking.size") == "RAG_CHUNKING_SIZE"


def test_precedence_default_file_env_flag(project: Path) -> None:
    path = write_config(project, "[chunking]\nsize = 300\noverlap = 40\nstrategy = 'sentence'\n"
                                 "[embedding]\nbatch_size = 8\n")
    env = {"RAG_CHUNKING_SIZE": "400", "RAG_CHUNKING_OVERLAP": "50"}
    settings = load_settings(project, env=env, flags={"chunking.size": 500, "chunking.strategy": None})

    assert settings.chunking.size == 500  # flag beats env beats file
    assert settings.chunking.overlap == 50  # env beats file
    assert settings.chunking.strategy == "sentence"  # a None flag falls through to the file
    assert settings.embedding.batch_size == 8  # file beats default
    assert settings.chunking.min_size == 48  # default

    assert settings.sources["chunking.size"] == "flag"
    assert settings.sources["chunking.overlap"] == "env RAG_CHUNKING_OVERLAP"
    assert settings.sources["chunking.strategy"] == str(path)
    assert settings.sources["embedding.batch_size"] == str(path)
    sources = {k: s for k, _, s in settings.items()}
    assert sources["chunking.min_size"] == "default"
    assert settings.get("chunking.size") == 500


def test_env_source_names_the_variable(project: Path) -> None:
    settings = load_settings(project, env={"RAG_CHUNKING_SIZE": "256", "UNRELATED": "x", "RAG_NOT_A_KEY": "1"})
    assert settings.chunking.size == 256
    assert settings.sources == {"chunking.size": "env RAG_CHUNKING_SIZE"}


def test_settings_are_frozen(project: Path) -> None:
    settings = load_settings(project, env={})
    with pytest.raises(AttributeError):
        settings.chunking.size = 3  # type: ignore[misc]


def test_with_values_validates_and_records_source(project: Path) -> None:
    settings = load_settings(project, env={})
    changed = settings.with_values({"chunking.size": 64}, "flag")
    assert changed.chunking.size == 64 and changed.sources["chunking.size"] == "flag"
    assert settings.chunking.size == 200  # the original is untouched
    with pytest.raises(ConfigError):
        settings.with_values({"chunking.size": 2}, "flag")


# -- finding the settings file and the index folder -------------------------------------

def test_nearest_config_is_found_upward(project: Path) -> None:
    outer = write_config(project, "[chunking]\nsize = 111\n")
    deep = project / "a" / "b" / "c"
    deep.mkdir(parents=True)
    settings = load_settings(deep, env={})
    assert settings.config_file == outer.resolve()
    assert settings.chunking.size == 111
    assert settings.base_dir == project.resolve()
    assert settings.index_dir == (project / ".rag").resolve()

    inner = write_config(project / "a", "[chunking]\nsize = 222\n")
    settings = load_settings(deep, env={})
    assert settings.config_file == inner.resolve()
    assert settings.chunking.size == 222  # the nearest file wins; files are not merged
    assert settings.sources["chunking.size"] == str(inner.resolve())
    assert settings.index_dir == (project / "a" / ".rag").resolve()


def test_index_dir_in_cwd_without_config(project: Path) -> None:
    sub = project / "docs"
    sub.mkdir()
    assert load_settings(sub, env={}).index_dir == (sub / ".rag").resolve()


def test_relative_index_path_is_taken_from_the_config_folder(project: Path) -> None:
    write_config(project, "[index]\npath = 'store/idx'\n")
    deep = project / "x" / "y"
    deep.mkdir(parents=True)
    assert load_settings(deep, env={}).index_dir == (project / "store" / "idx").resolve()
    absolute = project / "elsewhere"
    settings = load_settings(deep, env={"RAG_INDEX_PATH": str(absolute)})
    assert settings.index_dir == absolute.resolve()


def test_config_file_argument_replaces_the_search(project: Path) -> None:
    write_config(project, "[chunking]\nsize = 111\n")
    other = project / "conf" / "alt.toml"
    other.parent.mkdir()
    other.write_text("[chunking]\nsize = 333\n")
    settings = load_settings(project, env={}, config_file=Path("conf/alt.toml"))  # relative to cwd
    assert settings.config_file == other.resolve()
    assert settings.chunking.size == 333
    assert settings.sources["chunking.size"] == str(other.resolve())
    assert settings.index_dir == (project / "conf" / ".rag").resolve()


def test_rag_config_env_picks_the_file(project: Path) -> None:
    write_config(project, "[chunking]\nsize = 111\n")
    other = project / "alt.toml"
    other.write_text("[chunking]\nsize = 444\n")
    settings = load_settings(project, env={"RAG_CONFIG": str(other)})
    assert settings.config_file == other.resolve()
    assert settings.chunking.size == 444
    # the explicit argument (the --config flag) beats RAG_CONFIG
    third = project / "third.toml"
    third.write_text("[chunking]\nsize = 555\n")
    assert load_settings(project, env={"RAG_CONFIG": str(other)}, config_file=third).chunking.size == 555


def test_missing_config_file_is_an_error(project: Path) -> None:
    err = config_error(project, config_file=Path("nope.toml"))
    assert "nope.toml" in err.message
    err = config_error(project, env={"RAG_CONFIG": str(project / "gone.toml")})
    assert "gone.toml" in err.message


# -- errors in the settings file -----------------------------------------------------------

def test_unknown_key_names_file_and_key_and_lists_valid_keys(project: Path) -> None:
    path = write_config(project, "[chunking]\nsise = 300\n")
    err = config_error(project)
    assert str(path.resolve()) in err.message
    assert "chunking.sise" in err.message
    assert err.hint is not None
    for name in ("strategy", "size", "overlap", "min_size", "context_header"):
        assert name in err.hint


def test_unknown_section_is_an_error(project: Path) -> None:
    path = write_config(project, "[chunker]\nsize = 300\n")
    err = config_error(project)
    assert str(path.resolve()) in err.message
    assert "chunker" in err.message
    assert err.hint is not None and all(s in err.hint for s in ("index", "embedding", "chunking"))


def test_empty_unknown_section_is_an_error(project: Path) -> None:
    write_config(project, "[chunker]\n")
    config_error(project)


def test_nested_table_is_an_unknown_key(project: Path) -> None:
    write_config(project, "[chunking.extra]\nsize = 3\n")
    assert "chunking.extra" in config_error(project).message


def test_top_level_value_must_be_a_table(project: Path) -> None:
    path = write_config(project, "size = 300\n")
    err = config_error(project)
    assert str(path.resolve()) in err.message and "size" in err.message
    assert err.hint is not None and "chunking" in err.hint


def test_invalid_toml_is_an_error(project: Path) -> None:
    path = write_config(project, "[chunking\nsize = \n")
    err = config_error(project)
    assert str(path.resolve()) in err.message
    assert "TOML" in err.message
    assert "\n" not in err.message  # printed as one line


def test_non_utf8_file_is_an_error(project: Path) -> None:
    (project / ".rag.toml").write_bytes(b"[chunking]\nstrategy = '\xff'\n")
    assert "TOML" in config_error(project).message


@pytest.mark.parametrize(("text", "key"), [
    ("[chunking]\nsize = 'big'\n", "chunking.size"),  # a string for an int
    ("[chunking]\nsize = true\n", "chunking.size"),  # a bool for an int
    ("[chunking]\nsize = 300.5\n", "chunking.size"),  # a float for an int
    ("[chunking]\ncontext_header = 1\n", "chunking.context_header"),  # an int for a bool
    ("[index]\nlock_timeout = true\n", "index.lock_timeout"),  # a bool for a float
    ("[embedding]\nmodel = 3\n", "embedding.model"),  # an int for a string
    ("[index]\nexclude = [1, 2]\n", "index.exclude"),  # not a list of strings
    ("[index]\ninclude = 3\n", "index.include"),
])
def test_wrong_types_are_errors(project: Path, text: str, key: str) -> None:
    path = write_config(project, text)
    err = config_error(project)
    assert key in err.message
    assert str(path.resolve()) in err.message


@pytest.mark.parametrize("text", [
    "[chunking]\nsize = '300'\n",
    "[chunking]\ncontext_header = 'yes'\n",
    "[index]\nexclude = 'a,b'\n",
])
def test_numeric_looking_strings_in_the_file_are_type_errors(project: Path, text: str) -> None:
    write_config(project, text)
    config_error(project)


def test_float_setting_accepts_an_int(project: Path) -> None:
    write_config(project, "[index]\nlock_timeout = 2\n")
    value = load_settings(project, env={}).index.lock_timeout
    assert value == 2.0 and isinstance(value, float)


def test_value_outside_choices(project: Path) -> None:
    write_config(project, "[chunking]\nstrategy = 'paragraphs'\n")
    err = config_error(project)
    assert "chunking.strategy" in err.message and "paragraphs" in err.message
    for choice in config.CHUNK_STRATEGIES:
        assert choice in err.message
    write_config(project, "[embedding]\nbackend = 'openai'\n")
    assert "embedding.backend" in config_error(project).message


@pytest.mark.parametrize(("text", "key"), [
    ("[chunking]\nsize = 15\n", "chunking.size"),
    ("[chunking]\noverlap = -1\n", "chunking.overlap"),
    ("[embedding]\nbatch_size = 0\n", "embedding.batch_size"),
    ("[index]\nlock_timeout = -0.5\n", "index.lock_timeout"),
])
def test_value_below_min(project: Path, text: str, key: str) -> None:
    write_config(project, text)
    err = config_error(project)
    assert key in err.message and "at least" in err.message


def test_value_at_min_is_accepted(project: Path) -> None:
    write_config(project, "[chunking]\nsize = 16\noverlap = 0\n")
    settings = load_settings(project, env={})
    assert (settings.chunking.size, settings.chunking.overlap) == (16, 0)


def test_nan_lock_timeout_is_rejected(project: Path) -> None:
    write_config(project, "[index]\nlock_timeout = nan\n")
    config_error(project)


def test_flag_errors_name_the_flag_source(project: Path) -> None:
    err = config_error(project, flags={"chunking.strategy": "nonsense"})
    assert err.message.startswith("flag:") and "chunking.strategy" in err.message
    err = config_error(project, flags={"chunking.nope": 1})
    assert "chunking.nope" in err.message


# -- parsing the environment -------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("yes", True), ("1", True), ("true", True), (" ON ", True),
    ("0", False), ("no", False), ("False", False), ("off", False),
])
def test_env_bools(project: Path, raw: str, expected: bool) -> None:
    settings = load_settings(project, env={"RAG_CHUNKING_CONTEXT_HEADER": raw})
    assert settings.chunking.context_header is expected
    assert settings.sources["chunking.context_header"] == "env RAG_CHUNKING_CONTEXT_HEADER"


def test_env_bad_bool(project: Path) -> None:
    err = config_error(project, env={"RAG_CHUNKING_CONTEXT_HEADER": "maybe"})
    assert "env RAG_CHUNKING_CONTEXT_HEADER" in err.message and "maybe" in err.message


def test_env_ints_and_floats(project: Path) -> None:
    settings = load_settings(project, env={"RAG_CHUNKING_SIZE": " 320 ", "RAG_INDEX_LOCK_TIMEOUT": "1.5"})
    assert settings.chunking.size == 320
    assert settings.index.lock_timeout == 1.5
    for raw in ("3.5", "ten", "", "true"):
        err = config_error(project, env={"RAG_CHUNKING_SIZE": raw})
        assert "RAG_CHUNKING_SIZE" in err.message and "chunking.size" in err.message
    assert "at least" in config_error(project, env={"RAG_CHUNKING_SIZE": "4"}).message


@pytest.mark.parametrize(("raw", "expected"), [
    ("a,b", ["a", "b"]),
    (" a , b ,, ", ["a", "b"]),
    ('["a"]', ["a"]),
    ('["x,y", "*.md"]', ["x,y", "*.md"]),
    ("", []),
])
def test_env_lists(project: Path, raw: str, expected: list[str]) -> None:
    settings = load_settings(project, env={"RAG_INDEX_EXCLUDE": raw})
    assert settings.index.exclude == expected
    assert settings.sources["index.exclude"] == "env RAG_INDEX_EXCLUDE"


@pytest.mark.parametrize("raw", ['["a"', "[1, 2]", '["a", null]'])
def test_env_bad_lists(project: Path, raw: str) -> None:
    assert "index.exclude" in config_error(project, env={"RAG_INDEX_EXCLUDE": raw}).message


def test_env_strings_are_taken_verbatim(project: Path) -> None:
    settings = load_settings(project, env={"RAG_EMBEDDING_QUERY_PREFIX": "query: ", "RAG_EMBEDDING_MODEL": "123"})
    assert settings.embedding.query_prefix == "query: "
    assert settings.embedding.model == "123"


def test_list_defaults_are_not_shared() -> None:
    a, b = Settings(), Settings()
    assert a.index.exclude == b.index.exclude
    assert a.index.exclude is not b.index.exclude


# -- the example settings file ----------------------------------------------------------------

def test_example_config_parses_and_mentions_every_key() -> None:
    example = REPO_ROOT / ".rag.toml.example"
    flat = read_config_file(example)  # raises ConfigError on an unknown key or bad TOML
    for key, value in flat.items():
        Settings().with_values({key: value}, str(example))  # every value it sets is valid
    missing = [k for k in all_keys() if k not in mentioned_keys(example.read_text(encoding="utf-8"))]
    assert not missing, f"{example.name} does not mention: {', '.join(missing)}"


def mentioned_keys(text: str) -> set[str]:
    """Keys a settings file sets or shows commented out (`# size = 200` under `[chunking]` or
    `# [chunking]`), or names in full (`chunking.size`)."""
    mentioned = set(re.findall(r"\b([a-z_]+\.[a-z_]+)\b", text))
    section = None
    for line in text.splitlines():
        bare = line.lstrip("#").strip()
        header = re.fullmatch(r"\[([a-z_]+)\]", bare)
        if header:
            section = header.group(1)
            continue
        name = re.match(r"([a-z_]+)\s*=", bare)
        if name and section:
            mentioned.add(f"{section}.{name.group(1)}")
    return mentioned


def test_mentioned_keys_reads_commented_examples() -> None:
    text = "[chunking]\nsize = 200\n# overlap = 32\n#[index]\n#   path = '.rag'\n# see embedding.model\n"
    assert mentioned_keys(text) >= {"chunking.size", "chunking.overlap", "index.path", "embedding.model"}
    assert "chunking.path" not in mentioned_keys(text)


def test_example_file_is_generated_from_the_schema() -> None:
    """`.rag.toml.example` is exactly what the schema renders (regenerate it with
    `python -c "from rag_cli.config import render_example; print(render_example(), end='')" > .rag.toml.example`)."""
    from rag_cli.config import render_example

    example = Path(__file__).resolve().parent.parent / ".rag.toml.example"
    assert example.read_text(encoding="utf-8") == render_example()
