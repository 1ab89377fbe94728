"""Spawner: starts two children and a child with a grandchild, prints their pids, sleeps."""

from __future__ import annotations

import subprocess
import sys
import time

children = [
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)
]
grandparent = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('grandchild pid', p.pid, flush=True); time.sleep(600)",
    ]
)
for child in [*children, grandparent]:
    print("child pid", child.pid, flush=True)
time.sleep(600)
