"""Flood: writes lines of 200 characters as fast as it can for Seconds seconds."""

from __future__ import annotations

import sys
import time

deadline = time.monotonic() + float(sys.argv[1])
line = "x" * 200
n = 0
while time.monotonic() < deadline:
    for _ in range(200):
        sys.stdout.write(f"{n} {line}\n")
        n += 1
    sys.stdout.flush()
print(f"flooded {n} lines", flush=True)
