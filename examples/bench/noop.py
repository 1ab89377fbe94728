"""Noop: a callable package that returns at once (``noop:main``), for ``make bench``."""

from __future__ import annotations


def main(parameters: dict[str, object]) -> int:
    return 0
