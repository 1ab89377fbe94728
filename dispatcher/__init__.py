"""The Scale Out Master and the operator's API, by runtime role.

- shared edge: ``settings``, ``errors``, ``logs``, ``metrics``;
- the master's runtime: ``service`` (wires and supervises the loops), ``dispatch``,
  ``timers``, ``outbound``;
- the operator's API: ``api`` (what the CLI calls), ``projects``;
- ``broker/``: the RabbitMQ adapter; ``catalog/``: the SSISDB catalog, the only place
  with SQL; ``cli/``: the ``scaleout`` command; ``testing``: in-memory fakes of our seams.

Importing this package imports nothing else: the worker uses the broker adapter and
settings from here without pulling in SQLAlchemy or a database driver (checked by the
import contracts in ``pyproject.toml``)."""
