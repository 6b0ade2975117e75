"""The store contract: the same tests against the embedded Chroma and a real Chroma server.

The server is `chroma run` on 127.0.0.1 and a free port, started once for the session by the
``chroma_url`` fixture; every test uses a collection of its own. Vectors come from the hash
embedder (the embedding model is not what these tests are about); Chroma is real.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from rag_cli.errors import ExitCode, IndexMismatch, IndexNotFound, StoreError
from rag_cli.index_dir import IndexPaths
from rag_cli.indexer import index_paths
from rag_cli.models import Chunk, FileStatus
from rag_cli.retrieve.filters import parse_where
from rag_cli.retrieve.search import Searcher
from rag_cli.store.chroma import ChromaStore, VectorStore, chunk_metadata, open_store
from rag_cli.store.keyword import KeywordIndex
from rag_cli.testing.chroma_server import ChromaServer, free_port
from tests.indexing_helpers import invoke, settings_in

pytestmark = pytest.mark.slow

QUESTIONS = ["How often should I feed my sourdough starter?", "bulk fermentation folds",
             "country loaf whole wheat flour", "what is autolyse", "oven temperature for baking"]


@pytest.fixture(scope="session")
def chroma_url(tmp_path_factory: pytest.TempPathFactory):
    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server.url


@pytest.fixture(params=["embedded", "server"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_flags(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings flags that put this test's index in the store under test."""
    if kind == "embedded":
        return {}
    return {"store__url": request.getfixturevalue("chroma_url"), "store__collection": f"t-{uuid.uuid4().hex[:12]}"}


def hash_settings(workdir: Path, **flags):
    return settings_in(workdir, embedding__backend="hash", **flags)


def env_of(flags: dict[str, str]) -> dict[str, str]:
    return {"RAG_" + k.upper().replace("__", "_"): v for k, v in flags.items()}


def chunk(doc: str, i: int, text: str, **meta) -> Chunk:
    return Chunk(doc_id=doc, source=f"/docs/{doc}", kind="text", index=i, text=text, start=0, end=len(text),
                 tokens=len(text.split()), embed_text=text, title=doc, metadata=meta)


# -- the vector store itself ---------------------------------------------------------------------------
class Recording:
    """The store under test, noting which of its members a test uses."""

    def __init__(self, store: VectorStore) -> None:
        self._store, self.used = store, set()

    def __getattr__(self, name: str):
        self.used.add(name)
        return getattr(self._store, name)


def declared(protocol: type) -> set[str]:
    """The members a Protocol declares: its methods and its annotated attributes."""
    return {n for n in (*vars(protocol), *getattr(protocol, "__annotations__", {}))
            if not n.startswith("_")}


def test_vector_store_contract(tmp_path: Path, store_flags: dict[str, str]) -> None:
    from rag_cli.testing.fakes import HashEmbedder

    settings = hash_settings(tmp_path, **store_flags)
    store = Recording(open_store(settings, IndexPaths(settings.index_dir).chroma))
    assert store.where.startswith("on the Chroma server" if store_flags else "in ")
    assert (store.catalog is not None) == bool(store_flags)  # a server index's record of itself
    emb = HashEmbedder()
    chunks = [chunk("a.txt", 0, "rye flour and water"), chunk("a.txt", 1, "the starter doubles in size"),
              chunk("b.txt", 0, "bake the loaf at 250 degrees", year=2024), chunk("b.txt", 1, "cool on a rack")]
    store.upsert(chunks, emb.embed_documents([c.embed_text for c in chunks]))
    assert store.count() == 4
    assert store.stored_records(["a.txt::0", "zzz"]) == {"a.txt::0": (chunks[0].content_hash,
                                                                       chunk_metadata(chunks[0])["record"])}

    hits = store.query(emb.embed_query("rye flour"), k=2)
    assert hits[0].chunk_id == "a.txt::0" and hits[0].text == "rye flour and water"
    q, d = emb.embed_query("rye flour"), emb.embed_documents(["rye flour and water"])[0]
    assert hits[0].distance == pytest.approx(1 - sum(x * y for x, y in zip(q, d)), abs=1e-5)  # cosine space
    only_b = store.query(emb.embed_query("rye flour"), k=4, where={"doc_id": "b.txt"})
    assert {h.chunk_id for h in only_b} == {"b.txt::0", "b.txt::1"}
    assert store.query(emb.embed_query("loaf"), k=1, where={"meta_year": {"$gte": 2024}})[0].chunk_id == "b.txt::0"
    with_vec = store.query(emb.embed_query("rack"), k=1, with_vectors=True)[0]
    assert with_vec.vector is not None and len(with_vec.vector) == emb.dimension

    assert [c.chunk_id for c in store.chunks_at("a.txt", [1, 5])] == ["a.txt::1"]
    fetched = store.fetch(["b.txt::1"])
    assert fetched["b.txt::1"][0].text == "cool on a rack" and len(fetched["b.txt::1"][1]) == emb.dimension
    store.relabel([replace(chunks[3], title="Racks"), chunk("c.txt", 0, "not stored")])
    relabeled, vector = store.fetch(["b.txt::1"])["b.txt::1"]
    assert relabeled.metadata["title"] == "Racks" and vector == pytest.approx(fetched["b.txt::1"][1])
    assert store.count() == 4  # relabel rewrites stored chunks only
    with store.consistent():  # several reads at one moment of the store
        assert store.count() == 4 and store.fetch(["a.txt::0"])
    ids, texts, metas = store.all_chunks()
    assert sorted(ids) == sorted(c.chunk_id for c in chunks)
    assert {m["doc_id"] for m in metas} == {"a.txt", "b.txt"} and "cool on a rack" in texts

    page_ids, page_texts, page_metas, vectors = store.page(0, 10)
    assert sorted(page_ids) == sorted(ids) and len(vectors) == 4

    store.delete(["a.txt::1", "not-there"])
    assert store.count() == 3 and "a.txt::1" not in store.all_ids()
    store.reset()
    assert store.count() == 0 and store.all_ids() == []
    assert declared(VectorStore) <= store.used, declared(VectorStore) - store.used


# -- indexing: incremental, deletions, keyword consistency ---------------------------------------------
def test_incremental_indexing_and_keyword_consistency(tmp_path: Path, samples: Path,
                                                     store_flags: dict[str, str]) -> None:
    settings = hash_settings(tmp_path, **store_flags)
    first = index_paths(settings, [samples])
    assert first.count(FileStatus.ADDED) == 6 and first.chunks_written == first.chunks_total > 20
    assert (first.store != "") == bool(store_flags)

    again = index_paths(settings, [samples])
    assert again.count(FileStatus.UNCHANGED) == 6 and again.chunks_written == 0

    faq = samples / "faq.txt"
    faq.write_text(faq.read_text() + "\n\nQ: What is a zwieback?\nA: A twice-baked rusk, crisp and dry.\n")
    (samples / "glossary.rst").unlink()
    changed = index_paths(settings, [samples])
    assert changed.count(FileStatus.UPDATED) == 1 and changed.count(FileStatus.REMOVED) == 1
    assert 0 < changed.chunks_written < first.chunks_written and changed.chunks_deleted > 0

    searcher = Searcher(settings)
    ids = set(searcher.store.all_ids())
    assert not any(cid.startswith("glossary.rst") for cid in ids)
    assert len(ids) == changed.chunks_total
    hits, _ = searcher.search("zwieback rusk", 3, mode="keyword")  # a word only the edit brought
    assert hits and hits[0].doc_id == "faq.txt" and "zwieback" in hits[0].text
    assert searcher.keyword_index().tag == searcher.updated
    assert not searcher.search("glossary", 10, where=parse_where(["path=glossary.rst"]))[0]


def test_search_is_the_same_on_both_stores(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    local = hash_settings(tmp_path / "local")
    shared = hash_settings(tmp_path / "shared", store__url=chroma_url, store__collection=f"t-{uuid.uuid4().hex[:12]}")
    for settings in (local, shared):
        settings.base_dir.mkdir(exist_ok=True)
        index_paths(settings, [samples])
    a, b = Searcher(local), Searcher(shared)
    assert a.documents == b.documents  # the same file table, mtimes included
    filters = [None, parse_where(["path=guides/*"]), parse_where(["type=pdf"]),
               parse_where(["modified>=2000-01-01"])]
    for question in QUESTIONS:
        for where in filters:
            for mode in ("hybrid", "dense", "keyword"):
                assert same_ranking(a.search(question, 5, where, mode)[0], b.search(question, 5, where, mode)[0]), \
                    (question, where, mode)


def same_ranking(a, b) -> bool:
    """The same scores in the same order, and the same chunks wherever the score tells them apart
    (chunks that tie, such as unrelated ones at cosine 0, may come in any order)."""
    scores_a, scores_b = [round(h.score, 4) for h in a], [round(h.score, 4) for h in b]
    if scores_a != scores_b:
        return False
    last = scores_a[-1] if scores_a else None
    groups_a = {(round(h.score, 4), h.chunk_id) for h in a if round(h.score, 4) != last}
    groups_b = {(round(h.score, 4), h.chunk_id) for h in b if round(h.score, 4) != last}
    return groups_a == groups_b


# -- sharing: readers elsewhere, one writer, copies -----------------------------------------------------
def test_a_reader_elsewhere_follows_the_writer(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    flags = {"store__url": chroma_url, "store__collection": f"t-{uuid.uuid4().hex[:12]}"}
    writer = hash_settings(tmp_path / "writer", **flags)
    reader_dir = tmp_path / "reader"
    for d in (writer.base_dir, reader_dir):
        d.mkdir()
    index_paths(writer, [samples])
    reader = hash_settings(reader_dir, **flags)
    assert not (reader_dir / ".rag").exists()

    first = Searcher(reader)
    assert first.search("sourdough starter", 1)[0][0].doc_id == "guides/starter.md"
    saved = KeywordIndex.saved_tag(reader.index_dir / "keyword")
    assert saved == first.updated  # kept for the next question on this machine

    (samples / "guides" / "pumpernickel.md").write_text("# Pumpernickel\n\nSteamed for sixteen hours at low heat.\n")
    index_paths(writer, [samples])
    second = Searcher(reader)
    assert second.updated != first.updated
    hits, _ = second.search("pumpernickel steamed sixteen hours", 1, mode="keyword")
    assert hits and hits[0].doc_id == "guides/pumpernickel.md"
    assert second.search("pumpernickel", 3, where=parse_where(["path=guides/pumpernickel.md"]))[0]

    # A run in progress (marked dirty on the server): readers build the keyword index in memory, save nothing.
    store = ChromaStore.on_server(reader.store)
    store.catalog.put_state(updated=f"dirty:{time.time()}")
    before = KeywordIndex.saved_tag(reader.index_dir / "keyword")
    during = Searcher(reader)
    assert during.search("pumpernickel steamed", 1, mode="keyword")[0][0].doc_id == "guides/pumpernickel.md"
    assert KeywordIndex.saved_tag(reader.index_dir / "keyword") == before


def test_one_index_folder_writes_a_collection(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    flags = {"store__url": chroma_url, "store__collection": f"t-{uuid.uuid4().hex[:12]}"}
    one, two = hash_settings(tmp_path / "one", **flags), hash_settings(tmp_path / "two", **flags)
    for s in (one, two):
        s.base_dir.mkdir()
    index_paths(one, [samples / "guides"])
    with pytest.raises(IndexMismatch, match="written by another index folder"):
        index_paths(two, [samples / "recipes"])
    taken = index_paths(two, [samples / "recipes"], rebuild=True)  # takes the collection over
    docs = {d.doc_id for d in Searcher(two).documents}
    assert docs == {"country-loaf.pdf"} and taken.chunks_total == len(ChromaStore.on_server(two.store).all_ids())
    with pytest.raises(IndexMismatch):
        index_paths(one, [samples / "guides"])


def test_copy_a_local_index_to_a_server(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    collection = f"t-{uuid.uuid4().hex[:12]}"
    work = tmp_path / "project"
    work.mkdir()
    assert invoke(["index", str(samples)], work).exit_code == 0
    local = Searcher(hash_settings(work))

    result = invoke(["index", "--to", chroma_url, "--json"], work, RAG_STORE_COLLECTION=collection)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "rag-cli/copy-report/v1"
    assert report["chunks"]["sent"] == report["chunks"]["total"] == local.store.count() and report["files"] == 6

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    remote = Searcher(hash_settings(elsewhere, store__url=chroma_url, store__collection=collection))
    for question in QUESTIONS:
        assert [h.chunk_id for h in local.search(question, 5)[0]] == [h.chunk_id for h in remote.search(question, 5)[0]]

    # A second copy sends only what changed; chunks gone locally go from the server.
    assert json.loads(invoke(["index", "--to", chroma_url, "--json"], work,
                             RAG_STORE_COLLECTION=collection).stdout)["chunks"]["sent"] == 0
    (samples / "faq.txt").unlink()
    assert invoke(["index"], work).exit_code == 0
    third = json.loads(invoke(["index", "--to", chroma_url, "--json"], work, RAG_STORE_COLLECTION=collection).stdout)
    assert third["chunks"]["sent"] == 0 and third["chunks"]["deleted"] > 0 and third["files"] == 5

    # The folder now writes the server collection incrementally: nothing is embedded again.
    env = {"RAG_STORE_URL": chroma_url, "RAG_STORE_COLLECTION": collection}
    moved = json.loads(invoke(["index", "--json"], work, **env).stdout)
    assert moved["files"]["unchanged"] == 5 and moved["chunks"]["written"] == 0 and moved["store"]
    asked = invoke(["ask", "--retrieve-only", "--json", "How often should I feed my starter?"], elsewhere, **env)
    assert asked.exit_code == 0, asked.output
    assert json.loads(asked.stdout)["passages"][0]["doc_id"] == "guides/starter.md"


def test_a_server_collection_with_no_index(tmp_path: Path, chroma_url: str) -> None:
    settings = hash_settings(tmp_path, store__url=chroma_url, store__collection=f"t-{uuid.uuid4().hex[:12]}")
    with pytest.raises(IndexNotFound, match="no index on the Chroma server"):
        Searcher(settings)


def test_a_server_that_is_down_is_reported_at_once(tmp_path: Path, samples: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    for args in (["index", str(samples)], ["ask", "--retrieve-only", "starter"]):
        result = invoke(args, tmp_path, RAG_STORE_URL=url)
        assert result.exit_code == ExitCode.INDEX, result.output
        assert url in result.stderr and "cannot open the Chroma index" in result.stderr
        assert "store.url" in result.stderr  # the hint names what to check
    assert time.monotonic() - started < 30  # a hang guard, not a speed target


def test_a_server_that_stops_between_runs(tmp_path: Path, samples: Path) -> None:
    server = ChromaServer(tmp_path / "data").start()
    flags = {"store__url": server.url}
    work = tmp_path / "w"
    work.mkdir()
    try:
        index_paths(hash_settings(work, **flags), [samples])
    finally:
        server.stop()
    with pytest.raises(StoreError, match=server.url.replace(".", r"\.")):
        Searcher(hash_settings(work, **flags))
    # The same data, served again: everything is still there.
    with ChromaServer(tmp_path / "data", port=server.port):
        assert Searcher(hash_settings(work, **flags)).search("sourdough starter", 1)[0]


def test_bad_store_urls_are_usage_errors(tmp_path: Path) -> None:
    for url in ("ftp://example.org", "http://127.0.0.1:8000/some/path", "http://127.0.0.1:notaport"):
        result = invoke(["ask", "--retrieve-only", "x"], tmp_path, RAG_STORE_URL=url)
        assert result.exit_code == ExitCode.USAGE, (url, result.output)
        assert "store.url" in result.stderr


def test_the_token_is_sent_and_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_cli.config import StoreSettings
    from rag_cli.store.server import auth_headers, describe_server

    monkeypatch.setenv("TEAM_CHROMA_TOKEN", "s3cret")
    store = StoreSettings(url="http://127.0.0.1:9", token_env="TEAM_CHROMA_TOKEN", tenant="team")
    assert auth_headers(store) == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in describe_server(store) and "tenant team" in describe_server(store)
    monkeypatch.delenv("TEAM_CHROMA_TOKEN")
    assert auth_headers(store) == {}
    assert os.environ.get("RAG_STORE_TOKEN") is None


# -- the commands on a server index ---------------------------------------------------------------------
EVAL_QUESTIONS = [
    {"id": "feed", "question": "How often should I feed my starter at room temperature?",
     "relevant": ["guides/starter.md"]},
    {"id": "autolyse", "question": "Who coined the term autolyse?", "relevant": ["glossary.rst"]},
    {"id": "pdf", "question": "How much whole wheat flour goes into the country loaf?",
     "relevant": ["recipes/country-loaf.pdf"]},
]


def test_eval_gives_the_same_numbers_on_both_stores(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in EVAL_QUESTIONS))
    env = {"RAG_STORE_URL": chroma_url, "RAG_STORE_COLLECTION": f"t-{uuid.uuid4().hex[:12]}"}
    reports = []
    for name, extra in (("local", {}), ("shared", env)):
        work = tmp_path / name
        work.mkdir()
        assert invoke(["index", str(samples)], work, **extra).exit_code == 0
        result = invoke(["eval", str(qfile), "--retrieval-only", "--json"], work, **extra)
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout)["metrics"])
    assert reports[0] == reports[1] and "recall@5" in reports[0]


def test_the_installed_command_with_the_real_model_on_a_server(tmp_path: Path, samples: Path,
                                                              chroma_url: str) -> None:
    """`rag index` and `rag ask --retrieve-only` as real subprocesses with the bundled embedding model."""
    import subprocess
    import sys

    env = {**os.environ, "RAG_STORE_URL": chroma_url, "RAG_STORE_COLLECTION": f"t-{uuid.uuid4().hex[:12]}"}
    rag = str(Path(sys.executable).parent / "rag")
    index = subprocess.run([rag, "index", str(samples), "--json"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert index.returncode == 0, index.stderr
    assert json.loads(index.stdout)["store"].startswith("on the Chroma server")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ask = subprocess.run([rag, "ask", "--retrieve-only", "--json", "How often should I feed my sourdough starter?"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["passages"][0]["doc_id"] == "guides/starter.md"


def test_rag_serve_sees_changes_on_the_server(tmp_path: Path, samples: Path, chroma_url: str) -> None:
    from rag_cli.index_record import StampReader

    settings = hash_settings(tmp_path, store__url=chroma_url, store__collection=f"t-{uuid.uuid4().hex[:12]}")
    index_paths(settings, [samples])
    before = StampReader(settings).read()
    assert index_paths(settings, [samples]).chunks_written == 0
    assert StampReader(settings).read() == before  # nothing changed
    (samples / "faq.txt").write_text("Q: Rye?\nA: Rye flour ferments fast.\n")
    index_paths(settings, [samples])
    assert StampReader(settings).read() != before


def test_rag_serve_opens_the_server_catalog_once(tmp_path: Path, samples: Path, chroma_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_cli.serve.backend import Backend

    settings = hash_settings(tmp_path, store__url=chroma_url, store__collection=f"t-{uuid.uuid4().hex[:12]}")
    index_paths(settings, [samples])
    backend = Backend(settings)
    opened = {"n": 0}
    real = ChromaStore.on_server.__func__

    def counting(cls, *args, **kwargs):
        opened["n"] += 1
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(ChromaStore, "on_server", classmethod(counting))
    first = backend._stamps.read()
    assert [backend._stamps.read() for _ in range(3)] == [first] * 3 and opened["n"] == 1
    (samples / "faq.txt").write_text("Q: Rye?\nA: Rye flour ferments fast.\n")
    index_paths(settings, [samples])
    opened["n"] = 0
    assert backend._stamps.read() != first and opened["n"] == 0  # a change is seen through the open catalog
    ChromaStore.on_server(settings.store).reset()  # the collection dropped and made again on the server
    ChromaStore.on_server(settings.store)._client.delete_collection(f"{settings.store.collection}.catalog")
    with pytest.raises(IndexNotFound):
        backend._stamps.read()  # reopened once, and then there is nothing there


def test_readers_create_nothing_on_the_server(tmp_path: Path, chroma_url: str) -> None:
    import chromadb

    from rag_cli.store.server import parse_url

    name = f"typo-{uuid.uuid4().hex[:8]}"
    result = invoke(["ask", "--retrieve-only", "starter"], tmp_path, RAG_STORE_URL=chroma_url,
                    RAG_STORE_COLLECTION=name)
    assert result.exit_code == ExitCode.INDEX and f"no collection {name!r}" in result.stderr
    host, port, _ = parse_url(chroma_url)
    names = {c.name for c in chromadb.HttpClient(host=host, port=port).list_collections()}
    assert name not in names and f"{name}.catalog" not in names


def test_the_server_client_waits_at_most_store_timeout(tmp_path: Path, chroma_url: str) -> None:
    """chromadb leaves its HttpClient's httpx session without a timeout; store/chroma_api.py sets
    one through a private attribute, which this fails on when chromadb moves it."""
    from rag_cli.store.server import http_client

    store = hash_settings(tmp_path, store__url=chroma_url, store__timeout=7.0).store
    session = getattr(getattr(http_client(store), "_server", None), "_session", None)
    assert session is not None, "chromadb's HttpClient has no _server._session: rework store/chroma_api.py"
    assert session.timeout.read == 7.0 and session.timeout.connect == 7.0


def test_a_stuck_server_is_given_up_after_store_timeout(tmp_path: Path) -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()[0]) for _ in range(8)], daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"  # accepts connections, never answers
    try:
        started = time.monotonic()
        result = invoke(["ask", "--retrieve-only", "starter"], tmp_path, RAG_STORE_URL=url, RAG_STORE_TIMEOUT="1")
        assert result.exit_code == ExitCode.INDEX and "Timeout" in result.stderr, result.output
        assert time.monotonic() - started < 20  # a hang guard: store.timeout is 1 s
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_an_interrupted_copy_resumes(tmp_path: Path, samples: Path, chroma_url: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import rag_cli.store.transfer as transfer
    from rag_cli.store.transfer import copy_index

    settings = hash_settings(tmp_path)
    total = index_paths(settings, [samples]).chunks_total
    collection = f"t-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(transfer, "PAGE", 10)
    calls = {"n": 0}
    real = ChromaStore.upsert_raw

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreError("the connection dropped (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ChromaStore, "upsert_raw", failing)
    with pytest.raises(StoreError):
        copy_index(replace(settings, store=replace(settings.store, collection=collection)), chroma_url)
    target = replace(settings, store=replace(settings.store, url=chroma_url, collection=collection))
    assert str(ChromaStore.on_server(target.store).catalog.state()["updated"]).startswith("dirty:")
    reader_dir = tmp_path / "reader"
    reader_dir.mkdir()
    with pytest.raises(IndexNotFound, match="not complete yet"):  # a first copy publishes the build last
        Searcher(hash_settings(reader_dir, store__url=chroma_url, store__collection=collection))

    monkeypatch.setattr(ChromaStore, "upsert_raw", real)
    report = copy_index(replace(settings, store=replace(settings.store, collection=collection)), chroma_url)
    assert report.chunks_skipped == 10 and report.chunks_sent == total - 10 and report.chunks_total == total
    assert not str(ChromaStore.on_server(target.store).catalog.state()["updated"]).startswith("dirty:")


def test_copy_refuses_an_index_that_is_already_on_a_server(tmp_path: Path, chroma_url: str) -> None:
    result = invoke(["index", "--to", chroma_url], tmp_path, RAG_STORE_URL=chroma_url)
    assert result.exit_code == ExitCode.USAGE and "copies a local index" in result.stderr


def test_a_reader_keeps_the_file_table_until_it_changes(tmp_path: Path, samples: Path, chroma_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_cli.store.catalog import Catalog

    flags = {"store__url": chroma_url, "store__collection": f"t-{uuid.uuid4().hex[:12]}"}
    writer, reader = hash_settings(tmp_path / "w", **flags), hash_settings(tmp_path / "r", **flags)
    for s in (writer, reader):
        s.base_dir.mkdir()
    index_paths(writer, [samples])
    first = Searcher(reader).documents
    reads = {"n": 0}
    real = Catalog.files

    def counted(self):
        reads["n"] += 1
        return real(self)

    monkeypatch.setattr(Catalog, "files", counted)
    assert Searcher(reader).documents == first and reads["n"] == 0  # the local copy
    os.utime(samples / "faq.txt", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # touched, same text
    assert index_paths(writer, [samples]).chunks_written == 0
    reads["n"] = 0  # (the writer compared its table with the server's)
    after = Searcher(reader).documents
    assert reads["n"] == 1 and after != first  # read again: the mtime changed
    assert {d.doc_id for d in after if d.mtime_ns == 1_000_000_000_000_000_000} == {"faq.txt"}
    assert after == Searcher(writer).documents


def test_an_interrupted_first_run_on_a_server_resumes(tmp_path: Path, samples: Path, chroma_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import rag_cli.indexer as indexer

    settings = hash_settings(tmp_path, store__url=chroma_url, store__collection=f"t-{uuid.uuid4().hex[:12]}")
    real = indexer.Indexer._publish

    def killed(self, manifest, updated):
        raise KeyboardInterrupt  # the run dies after writing every chunk, before publishing

    monkeypatch.setattr(indexer.Indexer, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        index_paths(settings, [samples])
    monkeypatch.setattr(indexer.Indexer, "_publish", real)
    with pytest.raises(IndexNotFound, match="not complete yet"):
        Searcher(settings)
    again = index_paths(settings, [samples])
    assert again.chunks_written == 0 and again.count(FileStatus.UNCHANGED) == 6  # nothing lost, nothing redone
    assert Searcher(settings).search("sourdough starter", 1)[0]

    # The collection dropped on the server (an administrator, a new server): everything again.
    ChromaStore.on_server(settings.store).reset()
    store = ChromaStore.on_server(settings.store)
    store._client.delete_collection(store.catalog.name)
    redone = index_paths(settings, [samples])
    assert redone.chunks_written == redone.chunks_total > 0


def test_metadata_changes_reach_the_store_without_embedding_again(tmp_path: Path, store_flags: dict[str, str]) -> None:
    """A JSONL record's fields, or a chunk's offsets after an edit above it, change what is stored
    beside the vector but not the vector: the metadata is rewritten, nothing is embedded."""
    from rag_cli.testing.fakes import HashEmbedder

    docs = tmp_path / "docs"
    docs.mkdir()
    records = [{"id": f"r{i}", "title": f"Record {i}", "text": f"Rye bread recipe number {i} with caraway.",
                "year": 2020} for i in range(3)]
    corpus = docs / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    note = docs / "note.md"
    note.write_text("# Note\n\n" + "\n\n".join(f"Paragraph {i} about sourdough hydration and folds." * 6
                                              for i in range(12)) + "\n")
    settings = hash_settings(tmp_path, **store_flags)
    counting = HashEmbedder()
    index_paths(settings, [docs], embedder=counting)

    records[1]["year"] = 2021
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    note.write_text(note.read_text().replace("# Note\n\n", "# Note\n\nA new first line.\n\n", 1))
    before = counting.texts_embedded
    report = index_paths(settings, [docs], embedder=counting)
    assert report.count(FileStatus.UPDATED) == 2
    searcher = Searcher(settings, embedder=HashEmbedder())
    hits, _ = searcher.search("rye bread caraway", 5, parse_where(["year=2021"]))
    assert [h.doc_id for h in hits] == ["r1"]
    assert not searcher.search("rye bread caraway", 5, parse_where(["year=2020", "path=corpus.jsonl"]))[0] or \
        all(h.doc_id != "r1" for h in searcher.search("rye bread caraway", 5, parse_where(["year=2020"]))[0])
    # Every stored chunk of the note has the offsets of the note as it is now.
    text = note.read_text()
    ids, texts, metas = searcher.store.all_chunks()
    for chunk_text, meta in zip(texts, metas):
        if meta["doc_id"] == "note.md":
            assert text[meta["start"]:meta["end"]] == chunk_text
    assert counting.texts_embedded - before < 4  # only the chunk that holds the new line, if any


def test_a_second_copy_carries_metadata_changes(tmp_path: Path, chroma_url: str) -> None:
    from rag_cli.store.transfer import copy_index

    docs = tmp_path / "docs"
    docs.mkdir()
    records = [{"id": f"r{i}", "text": f"Rye bread recipe number {i} with caraway.", "year": 2020} for i in range(3)]
    corpus = docs / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = hash_settings(tmp_path)
    index_paths(settings, [docs])
    collection = f"t-{uuid.uuid4().hex[:12]}"
    local = replace(settings, store=replace(settings.store, collection=collection))
    copy_index(local, chroma_url)
    records[1]["year"] = 2021
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert index_paths(settings, [docs]).chunks_written == 0  # relabelled locally, not embedded
    again = copy_index(local, chroma_url)
    assert again.chunks_sent == 1 and again.chunks_skipped == 2
    reader = tmp_path / "reader"
    reader.mkdir()
    remote = Searcher(hash_settings(reader, store__url=chroma_url, store__collection=collection))
    assert [h.doc_id for h in remote.search("rye bread caraway", 5, parse_where(["year=2021"]))[0]] == ["r1"]
