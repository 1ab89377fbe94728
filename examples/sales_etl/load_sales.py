"""LoadSales: read the sales CSV, total the amounts by region, write them to SQLite.

Parameters arrive as argv (``--input``, ``--output``) and, like every parameter, as
``SSIS_PARAM_<NAME>`` environment variables (``FailOnPurpose``, ``Currency`` and the
sensitive ``ApiToken`` are read from there).
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def totals_by_region(rows: list[dict[str, str]]) -> dict[str, tuple[int, float]]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in rows:
        entry = totals[row["region"]]
        entry[0] += 1
        entry[1] += float(row["quantity"]) * float(row["unit_price"])
    return {region: (int(n), round(amount, 2)) for region, (n, amount) in sorted(totals.items())}


def write(path: Path, totals: dict[str, tuple[int, float]], currency: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS sales_by_region")
        db.execute(
            "CREATE TABLE sales_by_region (region TEXT PRIMARY KEY, sales INTEGER, "
            "amount REAL, currency TEXT)"
        )
        db.executemany(
            "INSERT INTO sales_by_region VALUES (?, ?, ?, ?)",
            [(region, n, amount, currency) for region, (n, amount) in totals.items()],
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", default="sales.csv")
    parser.add_argument("--output", default="sales_summary.sqlite3")
    args = parser.parse_args()
    currency = os.environ.get("SSIS_PARAM_CURRENCY", "EUR")
    has_token = bool(os.environ.get("SSIS_PARAM_APITOKEN"))

    print(f"Progress: reading {args.input}", flush=True)
    rows = load(Path(args.input))
    print(f"read {len(rows)} sales rows (api token given: {has_token})", flush=True)
    if os.environ.get("SSIS_PARAM_FAILONPURPOSE") == "true":
        print(
            f"error: FailOnPurpose is set; stopping after reading {len(rows)} rows", file=sys.stderr
        )
        return 3
    totals = totals_by_region(rows)
    print(f"Progress: totalled {len(totals)} regions", flush=True)
    write(Path(args.output), totals, currency)
    for region, (n, amount) in totals.items():
        print(f"{region}: {n} sales, {amount:.2f} {currency}", flush=True)
    print(f"wrote {len(totals)} rows to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
