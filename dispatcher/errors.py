"""scaleout's own errors. Driver errors (pika, SQLAlchemy, pyodbc) are translated into
these at the adapter edge, with ``raise ... from exc``, so callers never import a driver.

::

    ScaleoutError
    ├── CatalogError                 the catalog refused or failed an operation
    │   ├── CatalogUnavailable       cannot reach the database (retry later)
    │   ├── CatalogNotInitialised    the schema is missing or old: run `scaleout catalog init`
    │   ├── MissingDriver            an ODBC URL without unixODBC/pyodbc installed
    │   ├── CatalogKeyMissing        a sensitive value needs the catalog key this process lacks
    │   └── OperationRefused         an SSIS procedure's refusal (unknown id, wrong state, ...)
    │       └── NotFound             the folder, project, package, execution or worker is unknown
    └── BrokerError                  RabbitMQ refused or failed
        ├── BrokerUnavailable        cannot connect (down, TLS handshake, auth)
        ├── AccessRefused            the broker denied this user the resource
        └── PublishFailed            no confirm: nacked, unroutable or timed out
"""

from __future__ import annotations


class ScaleoutError(Exception):
    """Base of every error scaleout raises on purpose. ``hint`` says what to do next."""

    def __init__(self, message: str, *, hint: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code
        """SSIS's error number, where the refusal has one (e.g. 27251)."""


class CatalogError(ScaleoutError):
    pass


class CatalogUnavailable(CatalogError):
    pass


class NotLeader(CatalogUnavailable):
    """A write of the master's work by a master that does not hold the leader lease under
    the epoch it believes in: it was paused or cut off and another master took over. A
    kind of "not now" (CatalogUnavailable): the loops hold or skip their work, and the
    leadership loop steps the master down."""


class CatalogNotInitialised(CatalogError):
    pass


class MissingDriver(CatalogError):
    pass


class CatalogKeyMissing(CatalogError):
    pass


class OperationRefused(CatalogError):
    pass


class NotFound(OperationRefused):
    pass


class BrokerError(ScaleoutError):
    pass


class BrokerUnavailable(BrokerError):
    pass


class AccessRefused(BrokerError):
    pass


class PublishFailed(BrokerError):
    pass
