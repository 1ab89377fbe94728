"""Sleep: wait ``Seconds``, printing a line every ``Interval`` seconds; for tests and demos."""

from __future__ import annotations

import sys
import time


def main(seconds: float, interval: float) -> int:
    deadline = time.monotonic() + seconds
    tick = 0
    while (left := deadline - time.monotonic()) > 0:
        print(f"sleeping: {left:.1f} s left (tick {tick})", flush=True)
        tick += 1
        time.sleep(min(interval, left))
    print("slept", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0))
