"""The ``scaleout`` command (see :mod:`dispatcher.cli.app`); one module per command group."""

from __future__ import annotations

from dispatcher.cli.app import app, main

__all__ = ["app", "main"]
