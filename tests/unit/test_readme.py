"""The README's settings tables name every setting with its environment variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumers.worker.settings import WorkerSettings
from dispatcher.settings import MasterSettings, ScaleoutSettings, settings_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("settings", [MasterSettings, WorkerSettings])
def test_every_setting_is_documented(settings: type[ScaleoutSettings]) -> None:
    """A setting added to the code but not to the README fails here."""
    missing = [
        (name, env)
        for _ssis, name, env, _default in settings_table(settings)
        if f"`{name}`" not in README or f"`{env}`" not in README
    ]

    assert missing == []


DOCS = [Path(__file__).resolve().parents[2] / name for name in ("README.md", "docs")]


def _markdown_files() -> list[Path]:
    return [p for d in DOCS for p in ([d] if d.is_file() else sorted(d.glob("*.md")))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the README and docs/ names a file of the repository."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    relative = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    missing = [link for link in relative if not (page.parent / link).exists()]
    assert missing == []


def test_the_readme_links_the_contract() -> None:
    assert "(docs/protocol.md)" in README
    assert "(docs/design.md)" in README
