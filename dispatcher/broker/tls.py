"""The client side of TLS to RabbitMQ: verify the server's certificate and host name,
present a client certificate for mutual TLS. pika once skipped the host name check
(pika issues #464, #811); this context never does."""

from __future__ import annotations

import ssl
from pathlib import Path

from dispatcher.errors import BrokerUnavailable


def client_ssl_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A context with CERT_REQUIRED, host name checking and TLS >= 1.2. ``ca_file`` None
    trusts the system's CAs; ``cert_file`` loads the client certificate (and ``key_file``,
    or a key inside the certificate file)."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load the broker CA file {ca_file}: {exc}"
        raise BrokerUnavailable(msg, hint="check BrokerSettings.ca_file") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if key_file is not None and cert_file is None:
        msg = "a client key without a client certificate"
        raise BrokerUnavailable(msg, hint="set BrokerSettings.cert_file too")
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            # The message names files, never key material.
            msg = f"cannot load the client certificate {cert_file} / key {key_file}: {exc}"
            raise BrokerUnavailable(msg, hint="check cert_file and key_file") from exc
    return context
