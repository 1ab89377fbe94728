"""docs/web.md documents every console setting with its variable and every route."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.web import WebSettings, create_app
from dispatcher.web.settings import default_users_file

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "web.md").read_text()


@pytest.mark.parametrize("name", sorted(WebSettings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC
    assert f"`SCALEOUT_WEB_{name.upper()}`" in DOC


def test_every_route_is_documented() -> None:
    app = create_app(None, WebSettings(users_file=default_users_file()))  # type: ignore[arg-type]
    for route in app.routes:
        path = getattr(route, "path", "")
        shown = path.replace("{worker_id}", "{id}").replace("{execution_id:int}", "{id}")
        if "{action}" in shown:
            shown = "/workers/{id}/enable"
        assert f"`{shown}" in DOC or f"{shown}`" in DOC or f" {shown}" in DOC, path
