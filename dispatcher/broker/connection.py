"""Connecting to RabbitMQ: connection parameters from :class:`BrokerSettings`, the
translation of pika's exceptions into :mod:`dispatcher.errors`, and the reconnect policy.

pika reports a refused TLS handshake as a protocol error whose text carries the SSL
alert, and a refused login or vhost as "probable" errors; :func:`is_permanent` sorts
these from the transient failures (a restarting broker) that are worth a retry.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions as pe
from cryptography import x509
from cryptography.x509.oid import NameOID
from pika.adapters.blocking_connection import BlockingConnection
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)
from tenacity.stop import stop_base

from dispatcher.broker.tls import client_ssl_context
from dispatcher.errors import AccessRefused, BrokerError, BrokerUnavailable
from dispatcher.settings import BrokerSettings

logger = logging.getLogger("dispatcher.broker")

RECONNECT_BUDGET_S: Final = 30.0
"""How long a Publisher keeps reconnecting before it raises BrokerUnavailable."""
RECONNECT_MAX_WAIT_S: Final = 5.0
"""Ceiling of the exponential backoff between attempts."""

_TLS_REFUSALS: Final = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "PROTOCOL_VERSION")
"""Words in an SSL error that mean "refused", as opposed to a connection cut mid-way
(SSLEOFError and friends, seen when a broker restarts)."""
_warned_plain: set[str] = set()
_warn_lock = threading.Lock()
T = TypeVar("T")


def login_user(settings: BrokerSettings) -> str | None:
    """The RabbitMQ user a connection with ``settings`` logs in as: the URL's user name,
    or with EXTERNAL login the client certificate's CN. RabbitMQ refuses a publish whose
    ``user_id`` is not this login, so it is what both the master and a worker stamp."""
    username = urlsplit(settings.url).username
    if username:
        return unquote(username)
    if settings.cert_file is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(settings.cert_file.read_bytes())
    except (OSError, ValueError):
        return None  # connecting will say what is wrong with the file
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def address(settings: BrokerSettings) -> str:
    """``host:port`` of the broker (and the vhost unless ``/``), for messages an operator
    acts on; never the credentials."""
    parts = urlsplit(settings.url)
    port = parts.port or (5671 if settings.uses_tls else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"{settings.host}:{port}" + ("" if vhost == "/" else f" vhost {vhost}")


def connection_parameters(settings: BrokerSettings, *, name: str) -> pika.ConnectionParameters:
    """pika parameters for ``settings``: TLS for amqps://, EXTERNAL login with a client
    certificate and no password, plain AMQP only on loopback."""
    parts = urlsplit(settings.url)
    if not settings.uses_tls:
        _check_plain_allowed(settings)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    credentials: pika.credentials.ExternalCredentials | pika.PlainCredentials
    if parts.password is None and settings.cert_file is not None:
        credentials = pika.credentials.ExternalCredentials()
    else:
        credentials = pika.PlainCredentials(
            unquote(parts.username or "guest"), unquote(parts.password or "guest")
        )
    ssl_options = None
    if settings.uses_tls:
        context = client_ssl_context(settings.ca_file, settings.cert_file, settings.key_file)
        ssl_options = pika.SSLOptions(context, settings.server_hostname or settings.host)
    return pika.ConnectionParameters(
        host=settings.host,
        port=parts.port or (5671 if settings.uses_tls else 5672),
        virtual_host=vhost,
        credentials=credentials,
        ssl_options=ssl_options,
        heartbeat=settings.heartbeat_s,
        connection_attempts=1,
        socket_timeout=settings.connect_timeout_s,
        stack_timeout=settings.connect_timeout_s + 5,
        blocked_connection_timeout=settings.confirm_timeout_s,
        client_properties={"connection_name": name},
    )


def _check_plain_allowed(settings: BrokerSettings) -> None:
    if not settings.is_loopback:
        msg = f"plain AMQP to a non-loopback host ({settings.redacted_url}) is refused"
        raise BrokerUnavailable(msg, hint="use amqps:// with ca_file (and a client certificate)")
    with _warn_lock:
        if settings.redacted_url not in _warned_plain:
            _warned_plain.add(settings.redacted_url)
            logger.warning(
                "broker.plain_amqp: no TLS to %s (loopback only)",
                settings.redacted_url,
                extra={"url": settings.redacted_url},
            )


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code of a broker-initiated close, if ``exc`` is one."""
    if isinstance(exc, pe.ConnectionClosed | pe.ChannelClosed):
        return exc.reply_code
    return None


def is_permanent(exc: BaseException) -> bool:
    """True for failures a retry cannot fix: TLS refusals, login or vhost refusals, access
    refused (403), missing resource (404), a bad configuration."""
    if isinstance(exc, ssl.SSLCertVerificationError | BrokerError):
        return True
    if isinstance(exc, pe.ProbableAuthenticationError | pe.AuthenticationError):
        return True
    if isinstance(exc, pe.ProbableAccessDeniedError):
        return True
    if reply_code(exc) in {403, 404, 406, 530}:
        return True
    # pika often carries the SSL error only as text inside its own exception.
    text = str(exc)
    return "SSL" in text and any(alert in text for alert in _TLS_REFUSALS)


def translate(exc: BaseException, what: str) -> BrokerError:
    """The :mod:`dispatcher.errors` class for a pika (or ssl/socket) exception."""
    if isinstance(exc, BrokerError):
        return exc
    detail = f"{what}: {describe(exc)}"
    code = reply_code(exc)
    if isinstance(exc, pe.ProbableAccessDeniedError) or code in {403, 530}:
        return AccessRefused(detail, hint="check this user's permissions on the vhost", code=code)
    if code is not None:
        hint = "declare or provision it first" if code == 404 else ""
        return BrokerError(detail, hint=hint, code=code)
    hint = "is the broker up and reachable?"
    if isinstance(exc, pe.ProbableAuthenticationError | pe.AuthenticationError):
        hint = "the broker refused the login: is the certificate's CN a RabbitMQ user?"
    elif is_permanent(exc):
        hint = "TLS refused: check ca_file, the client certificate and server_hostname"
    return BrokerUnavailable(detail, hint=hint)


def describe(exc: BaseException) -> str:
    """``Type: text``, or the type alone: pika raises a bare AMQPConnectionError (empty
    text) for a refused TCP connection, which would print as ``AMQPConnectionError: ``."""
    text = str(exc).strip()
    if not text and isinstance(exc, pe.AMQPConnectionError):
        return "AMQPConnectionError: no connection (refused, unreachable or timed out)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


CONNECTION_ERRORS: Final = (pe.AMQPError, OSError)
"""What a pika call may raise when the connection or channel breaks (ssl.SSLError is an
OSError)."""


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "broker.reconnecting: %s attempt %d failed (%s); next in %.1f s",
            what,
            state.attempt_number,
            describe(exc) if exc else "?",
            state.upcoming_sleep,
            extra={"what": what, "attempt": state.attempt_number},
        )

    return before_sleep


def retrying(what: str, stop_event: threading.Event | None = None) -> Retrying:
    """Exponential backoff on transient errors: bounded by :data:`RECONNECT_BUDGET_S`, or,
    with ``stop_event``, until that event is set (a consumer keeps trying)."""
    stop: stop_base = stop_after_delay(RECONNECT_BUDGET_S)
    sleep: Callable[[float], object] | None = None
    if stop_event is not None:
        stop = stop_when_event_set(stop_event)
        sleep = stop_event.wait
    kwargs: dict[str, object] = {} if sleep is None else {"sleep": sleep}
    return Retrying(
        retry=retry_if_exception(lambda exc: not is_permanent(exc)),
        wait=wait_exponential(multiplier=0.2, max=RECONNECT_MAX_WAIT_S),
        stop=stop,
        before_sleep=_log_retry(what),
        reraise=True,
        **kwargs,  # type: ignore[arg-type]  # tenacity types sleep narrowly
    )


def open_connection(settings: BrokerSettings, *, name: str) -> BlockingConnection:
    """One connection attempt per cluster node, ``url`` first, then each of
    ``failover_urls``; raises the pika error of the last (callers retry, then translate)."""
    nodes = [connection_parameters(node, name=name) for node in settings.nodes()]
    connection = BlockingConnection(nodes if len(nodes) > 1 else nodes[0])
    coalesce_frames(connection)
    logger.info(
        "broker.connected: %s as %s",
        settings.redacted_url,
        name,
        extra={"url": settings.redacted_url, "connection_name": name},
    )
    return connection


_COALESCE_MAX_BYTES: Final = 128 * 1024
"""Largest send buffer that small frames are merged into."""


def coalesce_frames(connection: BlockingConnection) -> bool:
    """Send the frames queued between two polls in one write, not one write per frame.

    pika buffers every frame (a publish is three: method, header, body) as a separate chunk
    and sends each chunk with its own ``send`` (its own TLS record, its own TCP segment with
    TCP_NODELAY), which made socket writes the largest single cost of a worker and much of
    the broker's. Here the frames of one message are joined, and a message queued behind a
    chunk still waiting to go is appended to the last chunk. The head chunk is never
    touched: after a TLS WANT_WRITE it must be retried unchanged. Frame order, and so the
    protocol, is unchanged. This reaches into pika 1.x internals; where they differ
    (another pika), frames are left as pika sends them, and False is returned."""
    impl = getattr(connection, "_impl", None)
    transport = getattr(impl, "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if impl is None or transport is None or buffers is None:
        logger.debug("broker.frames_not_coalesced: unknown pika internals")
        return False
    write = transport.write

    def emit(data: bytes) -> None:
        if len(buffers) > 1 and len(buffers[-1]) + len(data) <= _COALESCE_MAX_BYTES:
            buffers[-1] += data
            transport._tx_buffered_byte_count += len(data)
        else:
            write(data)

    def output(frames: list[bytes]) -> None:
        data = b"".join(frames)
        impl.bytes_sent += len(data)
        impl.frames_sent += len(frames)
        emit(data)

    impl._adapter_emit_data = emit
    impl._output_marshaled_frames = output
    return True


def with_retries(
    what: str, attempt: Callable[[], T], stop_event: threading.Event | None = None
) -> T:
    """Run ``attempt`` under :func:`retrying`; translate the final failure."""
    try:
        return retrying(what, stop_event)(attempt)
    except CONNECTION_ERRORS as exc:
        raise translate(exc, what) from exc


def close_quietly(connection: BlockingConnection) -> None:
    """Close ``connection`` if it is open; a broken one cannot close cleanly, and dropping
    it is the goal, so its errors are swallowed."""
    try:
        if connection.is_open:
            connection.close()
    except CONNECTION_ERRORS:
        pass
