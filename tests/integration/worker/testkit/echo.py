"""Echo: prints Word Count times, says whether the sensitive Secret arrived (never
its value), prints the project parameter Stage, exits with ExitCode."""

from __future__ import annotations

import os
import sys

word, count, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    print(f"line {i} {word}", flush=True)
print("secret given" if os.environ.get("SSIS_PARAM_SECRET") else "no secret", flush=True)
print("stage " + os.environ["SSIS_PARAM_STAGE"], flush=True)
if code:
    print(f"error: echo asked to exit {code}", file=sys.stderr, flush=True)
sys.exit(code)
