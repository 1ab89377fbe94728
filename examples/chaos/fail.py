"""Fail: record the start, sleep ``Seconds``, record the failure, exit 3 (on purpose)."""

from __future__ import annotations

import sys
import time

import record


def main(seconds: float) -> int:
    record.write("begin")
    time.sleep(seconds)
    record.write("fail")
    print("error: failing on purpose", file=sys.stderr, flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.2))
