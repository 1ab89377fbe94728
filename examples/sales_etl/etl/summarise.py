"""Summarise: a callable package (``etl.summarise:main``) that counts sales per region.

The worker calls ``main`` with a dict of parameter values; its return value is the exit
code (None means 0).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path


def main(parameters: dict[str, object]) -> int:
    region = parameters.get("Region")
    with Path("sales.csv").open(newline="", encoding="utf-8") as handle:
        counts = Counter(row["region"] for row in csv.DictReader(handle))
    for name, count in sorted(counts.items()):
        if region in (None, "", name):
            print(f"{name}: {count} sales", flush=True)
    return 0
