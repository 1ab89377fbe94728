"""Sleep: wait ``Seconds``, reporting progress every ``Interval`` seconds; for tests and demos.

Each tick is a progress line (``##scaleout[progress] <percent> <message>``): the worker
sends it to the master as ``task.progress`` and logs it, and ``scaleout executions show``
shows the latest.
"""

from __future__ import annotations

import sys
import time

PROGRESS = "##scaleout[progress]"


def main(seconds: float, interval: float) -> int:
    deadline = time.monotonic() + seconds
    tick = 0
    while (left := deadline - time.monotonic()) > 0:
        done = 100 * (1 - left / seconds)
        print(f"{PROGRESS} {done:.0f} sleeping: {left:.1f} s left (tick {tick})", flush=True)
        tick += 1
        time.sleep(min(interval, left))
    print(f"{PROGRESS} 100 slept", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0))
