"""Ticker: prints a numbered tick every Interval seconds until StopFile exists."""

from __future__ import annotations

import sys
import time
from pathlib import Path

stop_file, interval = Path(sys.argv[1]), float(sys.argv[2])
tick = 0
while not stop_file.exists():
    print(f"tick {tick}", flush=True)
    tick += 1
    time.sleep(interval)
print("stopped", flush=True)
