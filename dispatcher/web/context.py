"""What a page handler gets (:class:`Ctx`) and the error for input it cannot use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dispatcher.api import ScaleOut
from dispatcher.errors import ScaleoutError
from dispatcher.web.security import Principal

if TYPE_CHECKING:
    from dispatcher.web.app import Console

logger = logging.getLogger("dispatcher.web")
Handler = Callable[["Ctx"], Response]


class BadInput(ScaleoutError):
    """A filter or form field the console cannot use; the page says which and why."""


@dataclass
class Ctx:
    """What a handler gets: the request, its form, the user and the app's parts."""

    request: Request
    form: FormData | None
    user: Principal
    console: Console

    @property
    def so(self) -> ScaleOut:
        return self.console.so

    def render(self, name: str, status_code: int = 200, **context: Any) -> Response:
        return self.console.render(self.request, name, self.user, status_code, **context)

    def flash(self, message: str, level: str = "ok") -> None:
        self.request.session.setdefault("flash", []).append([level, message])

    def redirect(self, url: str) -> Response:
        if self.request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name, default) if self.form else default
        return value.strip() if isinstance(value, str) else default

    @property
    def fragment(self) -> bool:
        return bool(self.request.headers.get("hx-request")) and not self.request.headers.get(
            "hx-boosted"
        )

    def audit(self, action: str, target: str) -> None:
        """Every change, in the log with who made it (``web.change``)."""
        logger.info(
            "web.change", extra={"user": self.user.name, "action": action, "target": target}
        )
