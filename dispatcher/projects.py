"""Packing a project folder into its deployable archive.

The archive is deterministic: entries sorted by path, a fixed timestamp, fixed
permissions (executable or not) and one compression level, so the same folder content
always gives the same bytes and therefore the same content hash; deploying it twice is a
no-op, and workers keep using their cached copy.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from schemas.project import ArchiveError, read_manifest

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def build_archive(folder: Path) -> bytes:
    """The zip archive of ``folder``; raise :class:`ArchiveError` when it is no project."""
    if not folder.is_dir():
        msg = f"{folder} is not a folder"
        raise ArchiveError(msg)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in _files(folder):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3  # unix, so the mode bits above are honoured everywhere
            zf.writestr(info, path.read_bytes(), compresslevel=6)
    archive = buffer.getvalue()
    read_manifest(archive)  # refuses a folder without a valid manifest.json at its root
    return archive


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        found.extend(Path(root) / name for name in files if not name.endswith(_SKIPPED_SUFFIXES))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
