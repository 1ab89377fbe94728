"""Sleep: wait ``Seconds`` and exit 0; writes no record."""

from __future__ import annotations

import sys
import time

if __name__ == "__main__":
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
