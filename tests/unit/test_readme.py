"""The README's settings tables name every setting with its environment variable."""

from __future__ import annotations

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
