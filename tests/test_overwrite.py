"""``--overwrite`` replaces only what amzqa wrote: an empty folder or one carrying an amzqa manifest or format tag.
A mistyped ``--out`` (a home or models folder) is refused with its files kept; a symbolic link is refused rather than
silently replaced by a folder."""

from __future__ import annotations

import json
import os

import pytest

from amzqa.errors import ArtifactError
from amzqa.io.atomic import atomic_dir, check_replaceable, swap_dir
from tests.conftest import SAMPLE


def siblings(folder) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_prepare_overwrite_refuses_a_folder_amzqa_did_not_write(tmp_path):
    from amzqa.indexing.corpus import PrepareConfig, prepare

    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=f"refusing to replace {mine}: it is not empty and holds no amzqa artifact"):
        prepare(PrepareConfig(input=SAMPLE, out=mine, overwrite=True), progress=False)
    assert (mine / "keep.txt").read_text() == "mine" and siblings(mine) == ["home"]  # kept, no temporary left


def test_index_overwrite_refuses_a_foreign_folder_before_any_work(sample_corpus, tmp_path, monkeypatch):
    import amzqa.indexing.build as build
    import amzqa.retrieval.embedding

    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    monkeypatch.setattr(amzqa.retrieval.embedding, "load_embedder", lambda *a, **k: pytest.fail("embedding began before the check"))
    with pytest.raises(ArtifactError, match=f"refusing to replace {mine}"):
        build.build_index(build.IndexConfig(corpus=sample_corpus, out=mine, overwrite=True), progress=False)
    assert (mine / "keep.txt").read_text() == "mine" and siblings(mine) == ["home"]


def test_prepare_overwrite_replaces_an_earlier_amzqa_artifact_or_an_empty_folder(tmp_path):
    from amzqa.indexing.corpus import PrepareConfig, prepare

    out = tmp_path / "corpus"
    prepare(PrepareConfig(input=SAMPLE, out=out), progress=False)
    (out / "stale.txt").write_text("from the earlier corpus")
    prepare(PrepareConfig(input=SAMPLE, out=out, overwrite=True), progress=False)
    assert not (out / "stale.txt").exists() and json.loads((out / "manifest.json").read_text())["format"].startswith("amzqa-")
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(PrepareConfig(input=SAMPLE, out=empty, overwrite=True), progress=False)
    assert (empty / "manifest.json").is_file()


@pytest.mark.parametrize("marker, content", [
    ("amzqa_adapter.json", "{}"),                          # an adapter (amzqa train)
    ("amzqa_export.json", "{}"),                           # an export (amzqa export)
    ("amzqa_model.json", "{}"),                            # a merged or provisioned model
    ("manifest.json", '{"format": "amzqa-index/2"}'),      # an index, a corpus, SFT data
])
def test_every_artifact_kind_may_be_replaced(tmp_path, marker, content):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / marker).write_text(content)
    (target / "weights.bin").write_text("old")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


@pytest.mark.parametrize("content", ['{"format": "chrome-extension"}', "not json", '["amzqa-index/2"]'])
def test_a_foreign_manifest_is_not_an_amzqa_artifact(tmp_path, content):
    target = tmp_path / "other"
    target.mkdir()
    (target / "manifest.json").write_text(content)
    with pytest.raises(ArtifactError, match="holds no amzqa artifact"):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert (target / "manifest.json").read_text() == content and siblings(target) == ["other"]


def test_swap_dir_refuses_a_foreign_folder_even_when_the_caller_checked_nothing(tmp_path):
    """indexing/build.py calls swap_dir directly after its build: the last check is there."""
    new, target = tmp_path / "new", tmp_path / "models"
    new.mkdir()
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="holds no amzqa artifact"):
        swap_dir(new, target)
    assert (target / "keep.txt").read_text() == "mine" and new.is_dir()  # the new folder is not lost either


@pytest.mark.parametrize("via", ["atomic_dir", "swap_dir"])
def test_a_symlinked_target_is_refused_not_silently_replaced(tmp_path, via):
    """Before: the exchange replaced the link with a folder and rmtree of the link failed silently. Now: refused,
    naming the link and the folder it points to; both untouched."""
    real = tmp_path / "v1"
    real.mkdir()
    (real / "manifest.json").write_text('{"format": "amzqa-index/2"}')
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ArtifactError, match=f"{link} is a symbolic link .*{real}"):
        if via == "atomic_dir":
            with atomic_dir(link, overwrite=True) as tmp:
                (tmp / "new.txt").write_text("new")
        else:
            new = tmp_path / "new"
            new.mkdir()
            swap_dir(new, link)
    assert link.is_symlink() and os.readlink(link) == str(real) and (real / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(ArtifactError, match="symbolic link"):
        check_replaceable(dangling)


def test_a_file_is_not_replaced_by_a_folder(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(ArtifactError, match="is a file"):
        with atomic_dir(target, overwrite=True):
            pass
    assert target.read_text() == "mine"
