"""Who is asking, what they may do, and the headers every answer carries.

Sessions are Starlette's signed cookies (itsdangerous): the user's name, role and a CSRF
token. Every POST must carry the token, as the ``X-CSRF-Token`` header (htmx sends it
from ``hx-headers`` on the body) or a ``csrf`` form field, or it is refused before it
reaches the API.
"""

from __future__ import annotations

import getpass
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.web.users import Role, UsersFile

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
}


class SecureHeaders:
    """Adds :data:`HEADERS` to every response, and no-store to pages (never to /static)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k not in HEADERS]
                headers += list(HEADERS.items())
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    signed_in: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, form: FormData | None) -> bool:
    expected = request.session.get("csrf")
    given: Any = request.headers.get("x-csrf-token") or (form.get("csrf") if form else None)
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and secrets.compare_digest(expected, given)
    )


def principal(request: Request, users: UsersFile, *, required: bool) -> Principal | None:
    """The signed-in user (checked against the users file as it is now), or, when sign-in
    is off, the local operator as an admin; None: sign in first."""
    if not required:
        return Principal(f"local:{getpass.getuser()}", "admin", signed_in=False)
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    user = users.users().get(name)
    if user is None:
        request.session.clear()
        return None
    return Principal(user.name, user.role, signed_in=True)


def sign_in(request: Request, name: str) -> None:
    """A new session for ``name`` (a fresh CSRF token: no fixation across sign-ins)."""
    request.session.clear()
    request.session["user"] = name
    csrf_token(request)
