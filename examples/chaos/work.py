"""Work: record the start, sleep ``Seconds``, then record the side effect and exit 0.

The ``effect`` record is the run's one side effect; it is written last, so a run killed
before its end leaves none.
"""

from __future__ import annotations

import sys
import time

import record


def main(seconds: float) -> int:
    record.write("begin")
    time.sleep(seconds)
    record.write("effect")
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
