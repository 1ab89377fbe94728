"""``python -m dispatcher.cli``: the same as the ``scaleout`` console script."""

from __future__ import annotations

from dispatcher.cli.app import main

main()
