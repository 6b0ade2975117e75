"""walk(): which files `rag index` finds under a path."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rag_cli.errors import ExitCode, InputError
from rag_cli.ingest.walk import FoundFile, assign_doc_ids, walk
from tests.indexing_helpers import as_nobody


def make_tree(root: Path, files: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"text of {rel}\n", encoding="utf-8")
    return root


def rels(root: Path, **kwargs) -> list[str]:
    result = walk(root, **kwargs)
    assert result.errors == []
    return [f.rel for f in result.files]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "docs", [
        "b.md", "a.txt", "c.rst", "d.pdf", "e.jsonl", "README.MD",
        "notes/z.md", "notes/deep/y.txt", "notes/draft.md",
        "drafts/wip.md", "notes/drafts/old.md",
        "image.png", "archive.zip", "Makefile", "notes/data.csv",
        ".hidden.md", ".git/config.md", "notes/.cache/x.md",
        "node_modules/pkg/readme.md",
    ])


def test_finds_supported_files_recursively_in_stable_order(tree: Path) -> None:
    result = walk(tree)
    found = [f.rel for f in result.files]
    assert found == [
        "README.MD", "a.txt", "b.md", "c.rst", "d.pdf", "e.jsonl",  # files of a folder first, sorted
        "drafts/wip.md",
        "node_modules/pkg/readme.md",  # walk() itself has no default excludes; settings add them
        "notes/draft.md", "notes/z.md",
        "notes/deep/y.txt",
        "notes/drafts/old.md",
    ]
    assert found == [f.rel for f in walk(tree).files]  # the same order every time
    assert result.errors == []
    for f in result.files:
        assert f.root == tree
        assert f.path == tree / f.rel
        assert f.path.is_absolute()
        assert "\\" not in f.rel and not f.rel.startswith("/")


def test_relative_root_gives_absolute_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    result = walk(Path("docs"))
    assert result.files[0].root == tree
    assert all(f.path.is_absolute() for f in result.files)
    assert [f.rel for f in result.files] == [f.rel for f in walk(tree).files]


def test_skips_hidden_and_unsupported(tree: Path) -> None:
    found = rels(tree)
    for rel in (".hidden.md", ".git/config.md", "notes/.cache/x.md", "image.png", "archive.zip", "Makefile",
                "notes/data.csv"):
        assert rel not in found


def test_skip_folder_is_left_out(tree: Path) -> None:
    index = make_tree(tree / "rag-index", ["chroma/notes.md", "leftover.txt"])
    assert "rag-index/leftover.txt" in rels(tree)
    found = rels(tree, skip=[index])
    assert not any(r.startswith("rag-index/") for r in found)
    # skip compares real paths: a link to the index is skipped as well
    link = tree / "index-link"
    link.symlink_to(index, target_is_directory=True)
    assert not any(r.startswith(("rag-index/", "index-link/")) for r in rels(tree, skip=[link]))


def test_exclude_file_names(tree: Path) -> None:
    found = rels(tree, exclude=["*.txt", "b.md"])
    assert "a.txt" not in found and "notes/deep/y.txt" not in found and "b.md" not in found
    assert "c.rst" in found and "notes/z.md" in found


def test_exclude_folder_names_at_any_depth(tree: Path) -> None:
    found = rels(tree, exclude=["drafts", "node_modules"])
    assert "drafts/wip.md" not in found
    assert "notes/drafts/old.md" not in found
    assert "node_modules/pkg/readme.md" not in found
    assert "notes/draft.md" in found  # a name match is whole: "drafts" is not "draft.md"


def test_exclude_path_globs(tree: Path) -> None:
    found = rels(tree, exclude=["notes/*.md"])
    assert "notes/z.md" not in found and "notes/draft.md" not in found
    assert "b.md" in found and "drafts/wip.md" in found and "notes/deep/y.txt" in found
    found = rels(tree, exclude=["notes/deep"])
    assert "notes/deep/y.txt" not in found and "notes/z.md" in found


def test_exclude_folder_with_trailing_slash_at_any_depth(tree: Path) -> None:
    found = rels(tree, exclude=["drafts/"])
    assert "drafts/wip.md" not in found
    assert "notes/drafts/old.md" not in found


def test_include_globs(tree: Path) -> None:
    assert rels(tree, include=["*.md"]) == [
        "b.md", "drafts/wip.md", "node_modules/pkg/readme.md", "notes/draft.md", "notes/z.md",
        "notes/drafts/old.md",
    ]
    assert rels(tree, include=["notes/deep"]) == ["notes/deep/y.txt"]  # a folder includes what is under it
    assert rels(tree, include=["*.txt", "*.rst"]) == ["a.txt", "c.rst", "notes/deep/y.txt"]
    # exclude wins over include; include never brings back unsupported or hidden files
    assert rels(tree, include=["*.md"], exclude=["notes"]) == ["b.md", "drafts/wip.md", "node_modules/pkg/readme.md"]
    assert rels(tree, include=["*.png", ".hidden.md"]) == []


def test_single_file_root(tree: Path) -> None:
    result = walk(tree / "notes" / "z.md")
    assert [(f.path, f.root, f.rel) for f in result.files] == [(tree / "notes" / "z.md",) * 2 + ("z.md",)]
    # a hidden file named explicitly is taken
    assert [f.rel for f in walk(tree / ".hidden.md").files] == [".hidden.md"]


def test_unsupported_single_file_is_an_input_error(tree: Path) -> None:
    with pytest.raises(InputError) as info:
        walk(tree / "image.png")
    assert info.value.exit_code == ExitCode.USAGE
    assert "image.png" in info.value.message and ".png" in info.value.message
    assert info.value.hint is not None and ".md" in info.value.hint and ".pdf" in info.value.hint
    with pytest.raises(InputError, match="no suffix"):
        walk(tree / "Makefile")


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as info:
        walk(missing)
    assert str(missing) in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_empty_folder(tmp_path: Path) -> None:
    result = walk(tmp_path)
    assert result.files == [] and result.errors == []


def test_symlink_loop_terminates_and_lists_each_file_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "docs", ["top.md", "sub/inner.md"])
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # sub/up -> docs: a loop
    (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)
    found = rels(root)
    assert sorted(found) == ["sub/inner.md", "top.md"]


def test_linked_folder_and_file_are_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", ["shared.md"])
    root = make_tree(tmp_path / "docs", ["own.md"])
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "alias.md").symlink_to(root / "own.md")
    (root / "dangling.md").symlink_to(tmp_path / "gone.md")
    assert rels(root) == ["alias.md", "own.md", "linked/shared.md"]


def test_two_links_to_one_folder_list_it_once(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", ["shared.md"])
    root = make_tree(tmp_path / "docs", [])
    (root / "a").symlink_to(outside, target_is_directory=True)
    (root / "b").symlink_to(outside, target_is_directory=True)
    assert rels(root) == ["a/shared.md"]


# -- unreadable folders ---------------------------------------------------------------------

def _walk_unprivileged(root: Path) -> dict:
    """walk(root) as {"files": [...rel], "errors": [...]}, as the `nobody` user when run as root
    (which reads any folder)."""
    def run() -> dict:
        result = walk(root)
        return {"files": [f.rel for f in result.files], "errors": [list(e) for e in result.errors]}

    return as_nobody(run, "to make a folder unreadable")


def test_unreadable_folder_is_reported_in_errors() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork to drop privileges")
    # not tmp_path: under root its parents are private, and the unprivileged walk must reach it
    base = Path(tempfile.mkdtemp(prefix="rag-walk-"))
    try:
        base.chmod(0o755)
        root = make_tree(base / "docs", ["ok.md", "locked/secret.md", "zz/after.md"])
        (root / "locked").chmod(0)
        result = _walk_unprivileged(root)
        assert result["files"] == ["ok.md", "zz/after.md"]  # the walk goes on past the unreadable folder
        assert len(result["errors"]) == 1
        path, reason = result["errors"][0]
        assert path == str(root / "locked")
        assert "cannot read folder" in reason and "ermission denied" in reason
    finally:
        (base / "docs" / "locked").chmod(0o700)
        shutil.rmtree(base)


# -- document ids (assign_doc_ids) ------------------------------------------------------------


def _found(root: str, rel: str) -> FoundFile:
    return FoundFile(Path(root) / rel, Path(root), rel)


def test_doc_ids_are_relative_paths_then_prefixed_by_the_root_folders() -> None:
    files = [_found("/h/notes", "README.md"), _found("/h/notes", "x/a.md"), _found("/h/work", "README.md"),
             _found("/w/work", "README.md"), _found("/w/work", "x/a.md")]
    assert assign_doc_ids(files, {}) == {"/h/notes/README.md": "README.md", "/h/notes/x/a.md": "x/a.md",
                                         "/h/work/README.md": "work/README.md",
                                         "/w/work/README.md": "w/work/README.md", "/w/work/x/a.md": "work/x/a.md"}
    # A file as the root: its name, then its folder's name in front.
    file_roots = [FoundFile(Path(p), Path(p), "notes.md") for p in ("/a/notes.md", "/b/notes.md")]
    assert assign_doc_ids(file_roots, {}) == {"/a/notes.md": "notes.md", "/b/notes.md": "b/notes.md"}


def test_doc_ids_recorded_are_kept_and_new_files_avoid_them() -> None:
    files = [_found("/b", "notes.md"), _found("/a", "notes.md"), _found("/a", "new.md")]
    # b was indexed first and holds the bare id; a's file, though walked first now, does not take it.
    recorded = {"/b/notes.md": "notes.md", "/c/new.md": "new.md"}  # /c is a root not walked in this run
    assert assign_doc_ids(files, recorded) == {"/b/notes.md": "notes.md", "/a/notes.md": "a/notes.md",
                                               "/a/new.md": "a/new.md"}
    # An id some other file's chunks hold (a JSONL record's) is taken too.
    assert assign_doc_ids([_found("/a", "r1")], {}, holder=lambda doc: "/c/c.jsonl" if doc == "r1" else None) == \
        {"/a/r1": "a/r1"}


def test_doc_ids_recorded_twice_go_to_the_file_whose_chunks_hold_them() -> None:
    """What a version before unique ids could leave: two files recorded with one id."""
    files = [_found("/a", "notes.md"), _found("/b", "notes.md")]
    recorded = {"/a/notes.md": "notes.md", "/b/notes.md": "notes.md"}
    assert assign_doc_ids(files, recorded) == {"/a/notes.md": "notes.md", "/b/notes.md": "b/notes.md"}
    held_by_b = assign_doc_ids(files, recorded, holder=lambda doc: "/b/notes.md" if doc == "notes.md" else None)
    assert held_by_b == {"/a/notes.md": "a/notes.md", "/b/notes.md": "notes.md"}


def test_doc_ids_end_with_a_hash_when_every_folder_name_is_taken() -> None:
    files = [_found("/docs", "README.md"), _found("/x/docs", "README.md")]
    recorded = {"/p/1": "docs/README.md", "/p/2": "x/docs/README.md", "/p/3": "README.md"}
    ids = assign_doc_ids(files, recorded)
    assert ids["/docs/README.md"].startswith("docs/README.md#") and ids["/x/docs/README.md"].startswith(
        "docs/README.md#")
    assert len(set(ids.values())) == 2 and ids == assign_doc_ids(files, recorded)  # deterministic
