"""The seams are kept: every implementation has what its Protocol declares, each registry knows
exactly the names the settings accept, and one factory builds each kind of model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_cli import config
from rag_cli.config import EmbeddingSettings, LlmSettings
from rag_cli.errors import ConfigError
from rag_cli.generate.base import Generator, generator_from_settings
from rag_cli.generate.llama import LlamaCppGenerator
from rag_cli.generate.openai_server import OpenAIServerGenerator
from rag_cli.ingest.chunkers import CHUNKERS, Chunker, make_chunker
from rag_cli.ingest.tokens import load_token_counter
from rag_cli.model_files import local_gguf
from rag_cli.store.embedders import EMBEDDERS, Embedder, SentenceTransformerEmbedder, embedder_from_settings
from rag_cli.store.vector_cache import CachingEmbedder, VectorCache
from rag_cli.testing.fakes import HashEmbedder, ScriptedGenerator


def declared(protocol: type) -> set[str]:
    """What a Protocol declares: its methods, properties and annotated attributes."""
    return {n for n in (*vars(protocol), *getattr(protocol, "__annotations__", {})) if not n.startswith("_")}


def lacking(obj: object, protocol: type) -> set[str]:
    return {name for name in declared(protocol) if not hasattr(obj, name)}


def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(24))  # a header resolve_gguf accepts
    return path


def test_the_protocols_declare_the_lifecycle() -> None:
    assert {"warm_up", "loaded", "name", "dimension", "embed_documents", "embed_query"} <= declared(Embedder)
    assert {"warm_up", "count_tokens", "generate", "name", "context_size", "style"} <= declared(Generator)
    assert {"chunk", "strategy", "size", "overlap"} <= declared(Chunker)


def test_every_embedder_has_what_the_protocol_declares(tmp_path: Path) -> None:
    real = embedder_from_settings(EmbeddingSettings(model="bundled"))  # cheap: nothing loads
    assert isinstance(real, SentenceTransformerEmbedder) and not real.loaded
    hashed = embedder_from_settings(EmbeddingSettings(backend="hash"), query_prefix="query: ")
    assert isinstance(hashed, HashEmbedder) and hashed.loaded and hashed.query_prefix == "query: "
    cached = CachingEmbedder(HashEmbedder(), VectorCache(tmp_path / "vectors.sqlite3", "hash"))
    for embedder in (real, hashed, cached):
        assert not lacking(embedder, Embedder), (type(embedder).__name__, lacking(embedder, Embedder))
    cached.warm_up()  # a fake has nothing to warm: no error
    assert cached.loaded


def test_every_generator_has_what_the_protocol_declares(tmp_path: Path) -> None:
    for generator in (LlamaCppGenerator(str(fake_gguf(tmp_path))), OpenAIServerGenerator("http://127.0.0.1:9/v1"),
                      ScriptedGenerator()):
        assert not lacking(generator, Generator), (type(generator).__name__, lacking(generator, Generator))


def test_every_chunker_has_what_the_protocol_declares() -> None:
    counter = load_token_counter("bundled")
    for strategy in CHUNKERS:
        chunker = make_chunker(strategy, counter, size=100, overlap=10)
        assert not lacking(chunker, Chunker), (strategy, lacking(chunker, Chunker))


def test_the_registries_know_exactly_the_names_the_settings_accept() -> None:
    assert tuple(EMBEDDERS) == config.EMBEDDING_BACKENDS
    assert tuple(CHUNKERS) == config.CHUNK_STRATEGIES
    with pytest.raises(ConfigError, match="unknown embedding backend 'openai'") as info:
        embedder_from_settings(EmbeddingSettings(backend="openai"))
    assert info.value.hint == f"valid backends: {', '.join(config.EMBEDDING_BACKENDS)}"


def test_one_factory_builds_either_generator(tmp_path: Path) -> None:
    model = str(fake_gguf(tmp_path))
    local = generator_from_settings(LlmSettings(context_size=1024, threads=2, prompt_style="chat"), model)
    assert isinstance(local, LlamaCppGenerator)
    assert (local.context_size, local.threads, local.style, local.location) == (1024, 2, "chat", model)
    relative = generator_from_settings(LlmSettings(), "tiny.gguf", base_dir=tmp_path)
    assert isinstance(relative, LlamaCppGenerator) and relative.location == model
    served = generator_from_settings(LlmSettings(url="http://127.0.0.1:9/v1", retries=0), "bundled")
    assert isinstance(served, OpenAIServerGenerator) and served.retries == 0 and served.requested == ""


def test_the_llama_constructor_is_cheap_and_gemma_is_assembled_on_first_use(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "gemma-3-270m-q4_k_m.gguf"
    generator = LlamaCppGenerator("gemma-270m")
    assert (generator.location, generator.name) == (str(target), target.name)
    assert not target.exists(), "the constructor assembled Gemma"
    assert local_gguf("gemma-270m", generator.location) == str(target)  # what warm_up loads
    with target.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert list(target.parent.iterdir()) == [target]  # assembled beside it and renamed: no part left
