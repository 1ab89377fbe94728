"""Hold: sleeps Seconds, then writes its start and end times to a file in StampDir."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

stamp = Path(sys.argv[2]) / f"{os.getpid()}.txt"
start = time.time()
time.sleep(float(sys.argv[1]))
stamp.write_text(f"{start} {time.time()}")
print("held", flush=True)
