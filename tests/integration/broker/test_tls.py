"""TLS on the broker connection: the server's certificate and name are verified, and the
broker refuses a client without a trusted certificate or a RabbitMQ user."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pika.exceptions as pe
import pytest

from dispatcher.broker import Publisher, connection_parameters
from dispatcher.broker.connection import is_permanent
from dispatcher.broker.tls import client_ssl_context
from dispatcher.errors import BrokerUnavailable
from dispatcher.settings import BrokerSettings
from tests.fixtures.broker import TlsBroker


def test_client_certificate_login(tls_broker: TlsBroker, vhost: str) -> None:
    """With w1's certificate the connection logs in as w1 by EXTERNAL, over TLS 1.2+."""
    settings = tls_broker.settings_for("w1", vhost)
    params = connection_parameters(settings, name="t-login")
    assert params.credentials.TYPE == "EXTERNAL"
    assert params.ssl_options is not None
    with Publisher(settings, name="t-login", user_id="w1"):
        out = tls_broker.ctl("list_connections", "vhost", "user", "ssl", "ssl_protocol")
    rows = [line.split() for line in out.splitlines()]
    mine = [row[1:] for row in rows if row[0] == vhost and row[1] == "w1"]
    assert len(mine) == 1, out
    assert mine[0][1] == "true"
    assert mine[0][2] in {"tlsv1.2", "tlsv1.3"}


def test_refused_without_a_client_certificate(tls_broker: TlsBroker, vhost: str) -> None:
    """A client that trusts the broker but shows no certificate fails the TLS handshake."""
    settings = tls_broker.settings_for("w1", vhost, cert_file=None, key_file=None)
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_REQUIRED"):
        Publisher(settings, name="t-nocert")


def test_refused_with_a_certificate_from_another_ca(tls_broker: TlsBroker, vhost: str) -> None:
    """A client certificate for CN=w1 signed by an untrusted CA is refused (unknown CA)."""
    settings = tls_broker.settings_for(
        "w1", vhost, cert_file=tls_broker.evil_cert_file, key_file=tls_broker.evil_key_file
    )
    with pytest.raises(BrokerUnavailable, match="UNKNOWN_CA"):
        Publisher(settings, name="t-evil")


def test_refused_for_a_valid_certificate_without_a_user(tls_broker: TlsBroker, vhost: str) -> None:
    """mallory's certificate is from the trusted CA, but no RabbitMQ user mallory exists."""
    with pytest.raises(BrokerUnavailable, match="ACCESS_REFUSED - Login was refused") as caught:
        Publisher(tls_broker.settings_for("mallory", vhost), name="t-mallory")
    assert "certificate's CN" in caught.value.hint


def test_client_refuses_a_broker_under_another_name(tls_broker: TlsBroker, vhost: str) -> None:
    """Expecting the broker as wrong.invalid, the client refuses its localhost certificate."""
    settings = tls_broker.settings_for("w1", vhost, server_hostname="wrong.invalid")
    with pytest.raises(BrokerUnavailable, match="Hostname mismatch"):
        Publisher(settings, name="t-name")


def test_client_refuses_a_broker_from_an_untrusted_ca(tls_broker: TlsBroker, vhost: str) -> None:
    """A client that trusts only the evil CA refuses the real broker's certificate."""
    settings = tls_broker.settings_for("w1", vhost, ca_file=tls_broker.evil_ca_file)
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        Publisher(settings, name="t-untrusted")


@pytest.fixture
def wrong_name_server(tls_broker: TlsBroker) -> Iterator[int]:
    """A TLS server on a free loopback port showing a trusted-CA cert for wrong.invalid."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_broker.wrong_name_cert_file, tls_broker.wrong_name_key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass  # the client hangs up once it has seen the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _handshake(ca_file: Path, port: int, server_hostname: str) -> None:
    context = client_ssl_context(ca_file, None, None)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname),
    ):
        pass


def test_wrong_name_server_is_refused(tls_broker: TlsBroker, wrong_name_server: int) -> None:
    """A server whose trusted certificate names another host is refused; the same server
    is accepted when that other name is the one expected (so the name is the only fault)."""
    _handshake(tls_broker.ca_file, wrong_name_server, "wrong.invalid")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(tls_broker.ca_file, wrong_name_server, "localhost")
    settings = BrokerSettings(
        url=f"amqps://127.0.0.1:{wrong_name_server}/x",
        ca_file=tls_broker.ca_file,
        cert_file=tls_broker.cert_for("w1")[0],
        key_file=tls_broker.cert_for("w1")[1],
        connect_timeout_s=5,
    )
    with pytest.raises(BrokerUnavailable, match="address mismatch"):
        Publisher(settings, name="t-wrong-server")


def test_plain_amqp_is_refused_off_loopback() -> None:
    """amqp:// to a non-loopback host is refused before any connection is tried."""
    settings = BrokerSettings(url="amqp://u:secret@broker.example.com:5672/%2F")
    with pytest.raises(BrokerUnavailable, match="plain AMQP") as caught:
        connection_parameters(settings, name="t-plain")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch"), True),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), False),
        (pe.StreamLostError("Stream connection lost: SSLEOFError(8, 'EOF occurred')"), False),
        (
            pe.IncompatibleProtocolError(
                "StreamLostError: SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] unknown ca')"
            ),
            True,
        ),
        (pe.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"), False),
        (pe.ChannelClosedByBroker(403, "ACCESS_REFUSED"), True),
        (ConnectionRefusedError(111, "Connection refused"), False),
    ],
    ids=["verify", "eof", "stream-lost", "unknown-ca", "forced", "refused-403", "tcp-refused"],
)
def test_refusals_are_permanent_and_cuts_are_not(error: BaseException, permanent: bool) -> None:
    """TLS and permission refusals are not retried; a connection cut (restart) is."""
    assert is_permanent(error) is permanent
