"""The Scale Out Master: catalog, broker adapter, dispatch loop, timers, service, CLI.

Importing this package imports nothing else: the worker uses the broker adapter and
settings from here without pulling in SQLAlchemy or a database driver."""
