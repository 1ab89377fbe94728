"""The console's ASGI app: Scale Out Manager and the All Executions report in a browser.

:func:`create_app` builds a Starlette app on one :class:`~dispatcher.api.ScaleOut`
session. Pages are Jinja2 templates; their live parts are htmx polls of fragment routes
(the same route answers an ``HX-Request`` with the fragment only). Reads come from the
catalog (so the console works with the broker down); every change is an API call, as
the CLI makes it, in the name of the signed-in user.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from dispatcher.api import ScaleOut
from dispatcher.errors import (
    CatalogNotInitialised,
    CatalogUnavailable,
    MissingDriver,
    NotFound,
    ScaleoutError,
)
from dispatcher.web import pages
from dispatcher.web.context import BadInput, Ctx, Handler
from dispatcher.web.security import (
    Principal,
    SecureHeaders,
    csrf_ok,
    csrf_token,
    principal,
    sign_in,
)
from dispatcher.web.settings import WebSettings
from dispatcher.web.users import UsersFile, verify

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent


class Console:
    def __init__(self, so: ScaleOut, settings: WebSettings) -> None:
        self.so = so
        self.settings = settings
        self.users = UsersFile(settings.users_file)
        self.required = settings.sign_in_required()
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        pages.register_filters(env)
        self.templates = Jinja2Templates(env=env)

    def render(
        self,
        request: Request,
        name: str,
        user: Principal | None,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        flashes = request.session.pop("flash", []) if not request.headers.get("hx-request") else []
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "user": user,
                "csrf": csrf_token(request),
                "flashes": flashes,
                "poll_ms": self.settings.poll_ms,
                "sign_in_required": self.required,
                **context,
            },
            status_code=status_code,
            headers={"Vary": "HX-Request"},
        )

    def route(
        self, handler: Handler, *, admin: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind sign-in, role and CSRF checks, with the catalog's errors
        turned into pages (404, a bad-input message, an outage banner), never a trace."""

        async def endpoint(request: Request) -> Response:
            try:
                user = principal(request, self.users, required=self.required)
            except ScaleoutError as exc:  # a broken users file: say which, to everyone
                return self.problem(request, None, 500, str(exc), exc.hint)
            if user is None:
                return _to_login(request)
            form = await request.form() if request.method == "POST" else None
            if request.method == "POST" and not csrf_ok(request, form):
                return self.problem(request, user, 403, "the form expired: reload the page")
            if admin and not user.is_admin:
                msg = f"{user.name} is a viewer: changes need the admin (ssis_admin) role"
                return self.problem(request, user, 403, msg)
            ctx = Ctx(request, form, user, self)
            try:
                return await run_in_threadpool(handler, ctx)
            except ScaleoutError as exc:
                return self.failure(request, user, exc)

        return endpoint

    def failure(self, request: Request, user: Principal, exc: ScaleoutError) -> Response:
        if isinstance(exc, NotFound):
            return self.problem(request, user, 404, str(exc), exc.hint)
        if isinstance(exc, CatalogUnavailable | CatalogNotInitialised | MissingDriver):
            logger.warning("web.catalog_unavailable", extra={"error": str(exc)})
            return self.outage(request, user, exc)
        if isinstance(exc, BadInput):
            return self.problem(request, user, 400, str(exc), exc.hint)
        return self.problem(request, user, 409, str(exc), exc.hint)

    def problem(
        self, request: Request, user: Principal | None, status: int, message: str, hint: str = ""
    ) -> Response:
        if request.headers.get("hx-request"):
            # htmx swaps only 2xx answers: the message goes to the page's message area.
            template = self.templates.get_template("_message.html")
            html = template.render(level="error", message=message, hint=hint)
            return HTMLResponse(
                html, headers={"HX-Retarget": "#messages", "HX-Reswap": "innerHTML"}
            )
        return self.render(
            request, "error.html", user, status, status=status, message=message, hint=hint
        )

    def outage(self, request: Request, user: Principal, exc: ScaleoutError) -> Response:
        if request.headers.get("hx-request"):
            template = self.templates.get_template("_banner.html")
            html = template.render(message=str(exc), hint=exc.hint)
            return HTMLResponse(html, headers={"HX-Retarget": "#banner", "HX-Reswap": "innerHTML"})
        return self.render(request, "outage.html", user, 503, banner=str(exc), banner_hint=exc.hint)


def _to_login(request: Request) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def create_app(so: ScaleOut, settings: WebSettings) -> Starlette:
    """The console on ``so``; the caller owns ``so`` and closes it."""
    console = Console(so, settings)
    r = console.route
    routes = [
        Route("/", lambda request: RedirectResponse("/workers", status_code=303)),
        Route("/login", _login(console), methods=["GET", "POST"]),
        Route("/logout", r(_logout), methods=["POST"]),
        Route("/workers", r(pages.workers), methods=["GET"]),
        Route("/workers", r(pages.worker_add, admin=True), methods=["POST"]),
        Route("/workers/{worker_id}", r(pages.worker), methods=["GET"]),
        Route(
            "/workers/{worker_id}/{action}", r(pages.worker_change, admin=True), methods=["POST"]
        ),
        Route("/executions", r(pages.executions), methods=["GET"]),
        Route("/executions/{execution_id:int}", r(pages.execution), methods=["GET"]),
        Route("/executions/{execution_id:int}/log", r(pages.execution_log), methods=["GET"]),
        Route(
            "/executions/{execution_id:int}/stop",
            r(pages.execution_stop, admin=True),
            methods=["POST"],
        ),
        Route(
            "/executions/{execution_id:int}/rerun",
            r(pages.execution_rerun, admin=True),
            methods=["POST"],
        ),
        Route("/projects", r(pages.projects), methods=["GET"]),
        Route("/run", r(pages.run_form), methods=["GET"]),
        Route("/run", r(pages.run_start, admin=True), methods=["POST"]),
        Route("/masters", r(pages.masters), methods=["GET"]),
        Route("/charts", r(pages.charts_page), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecureHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=settings.hosts()),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key or secrets.token_urlsafe(32),
            session_cookie="scaleout_console",
            max_age=settings.session_max_age_s,
            same_site="strict",
            https_only=settings.https_only,
        ),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "no such page" if status == 404 else str(getattr(exc, "detail", "refused"))
        return console.render(request, "error.html", None, status, status=status, message=message)

    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("web.error", exc_info=exc)
        message = "the console failed on this request; its log says why"
        return console.render(request, "error.html", None, 500, status=500, message=message)

    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: not_found, Exception: crashed},
    )


def _login(console: Console) -> Callable[[Request], Awaitable[Response]]:
    async def login(request: Request) -> Response:
        target = request.query_params.get("next", "/workers")
        target = target if target.startswith("/") and not target.startswith("//") else "/workers"
        if not console.required:
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            return console.render(request, "login.html", None, next=target)
        form = await request.form()
        if not csrf_ok(request, form):
            return console.render(
                request, "login.html", None, 403, next=target, error="the form expired: try again"
            )
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        user = await run_in_threadpool(verify, console.users.users(), name, password)
        if user is None:
            logger.warning("web.sign_in_refused", extra={"user": name[:64]})
            return console.render(
                request, "login.html", None, 401, next=target, error="wrong name or password"
            )
        sign_in(request, user.name)
        logger.info("web.signed_in", extra={"user": user.name, "role": user.role})
        return RedirectResponse(target, status_code=303)

    return login


def _logout(ctx: Ctx) -> Response:
    ctx.request.session.clear()
    return ctx.redirect("/login" if ctx.console.required else "/workers")


__all__ = ["Console", "create_app"]
