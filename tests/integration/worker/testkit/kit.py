"""Sum: a callable package (``kit:add``)."""

from __future__ import annotations


def add(parameters):
    print("sum", sum(range(10)), flush=True)
    return 0
