"""Project archives: built deterministically, extracted safely, verified by hash."""

from __future__ import annotations

import base64
import io
import os
import zipfile
from pathlib import Path

import pytest

from consumers.worker.projects import ProjectStore, ProjectUnavailable, extract_safely
from dispatcher.projects import build_archive
from schemas.messages import ProjectArchive
from schemas.project import ArchiveError, content_hash, read_manifest

MANIFEST = '{"format": 1, "name": "P", "packages": [{"name": "A", "entry": {"argv": ["run.sh"]}}]}'


def make_project(folder: Path, mtime: int) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "manifest.json").write_text(MANIFEST)
    (folder / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"junk")
    for path in folder.rglob("*"):
        os.utime(path, (mtime, mtime))
    return folder


def test_the_same_content_gives_the_same_bytes(tmp_path: Path) -> None:
    """Two copies of a project with different timestamps pack to identical archives."""
    a = build_archive(make_project(tmp_path / "a", 1_000_000))
    b = build_archive(make_project(tmp_path / "b", 2_000_000))
    assert a == b
    names = zipfile.ZipFile(io.BytesIO(a)).namelist()
    assert names == ["manifest.json", "run.sh", "sub/data.csv"]
    assert read_manifest(a).name == "P"


def test_a_folder_without_a_manifest_is_refused(tmp_path: Path) -> None:
    """build_archive refuses a folder that is no project."""
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ArchiveError, match=r"manifest\.json"):
        build_archive(tmp_path)


def test_extraction_keeps_the_executable_bit_and_refuses_escapes(tmp_path: Path) -> None:
    """Entries extract with their mode; an entry with .. in its path is refused."""
    archive = build_archive(make_project(tmp_path / "p", 0))
    extract_safely(archive, tmp_path / "out")
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ProjectUnavailable, match="outside the project"):
        extract_safely(evil.getvalue(), tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()


def test_the_store_refuses_bytes_that_do_not_match_the_hash(tmp_path: Path) -> None:
    """A reply whose bytes hash differently fails the fetch with both hashes named."""
    archive = build_archive(make_project(tmp_path / "p", 0))
    claimed = content_hash(b"something else")
    store: ProjectStore

    def answer(project_hash: str) -> None:
        reply = ProjectArchive(
            project_hash=project_hash, found=True, archive_b64=base64.b64encode(archive).decode()
        )
        store.deliver(reply)

    store = ProjectStore(tmp_path / "cache", answer, timeout_s=5)
    with pytest.raises(ProjectUnavailable, match="hash mismatch") as refused:
        store.get(claimed)
    assert content_hash(archive) in str(refused.value)
    good = store.get(content_hash(archive))
    assert (good.root / "sub" / "data.csv").read_text() == "a,b\n1,2\n"
    assert good.manifest.name == "P"
