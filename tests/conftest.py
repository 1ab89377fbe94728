"""Suite-wide fixtures: a clean ``SCALEOUT_*`` environment for every test, so settings a
developer exported never leak into results (test-service URLs, ``SCALEOUT_TEST_*``, stay)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_scaleout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SCALEOUT_") and not key.startswith("SCALEOUT_TEST_"):
            monkeypatch.delenv(key)
