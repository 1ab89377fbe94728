"""The web console, ``scaleout web``: Scale Out Manager and the All Executions report in a
browser (Starlette, Jinja2 and htmx; vendored static files, nothing from a CDN).

Nothing but the CLI imports this package; it depends on :mod:`dispatcher.api` and the
catalog's reads (an import-linter contract keeps it so).
"""

from __future__ import annotations

from dispatcher.web.app import create_app
from dispatcher.web.settings import WebSettings

__all__ = ["WebSettings", "create_app"]
