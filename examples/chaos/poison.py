"""Poison: record the start, then SIGKILL the worker that runs it, every time.

The worker starts a command package as its own child (``subprocess.Popen`` in a new
session), so the package's parent process is the worker itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import record


def main() -> int:
    record.write("poison")
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(1.0)  # the worker is gone; nobody waits for this exit code
    return 0


if __name__ == "__main__":
    sys.exit(main())
