"""``python -m bench.probe [N] [--workers W] [--dialect D] [--profile S]``: one end-to-end
throughput run of scaleout alone, with where the CPU went (master, workers, RabbitMQ), for
working on the dispatcher between full ``make bench`` runs.

Prints one JSON line: throughput, CPU milliseconds per execution by process, and (with
``--profile S``) the busiest functions of the master and of one worker over S seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import profile
from bench.infra import amqp_url, beam_pid, catalog_database, fresh_vhost
from bench.ours import running_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    parser.add_argument("tasks", nargs="?", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--dialect", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds (0: none)")
    parser.add_argument("--max-task-count", type=int, help="workers' MaxTaskCount (default 10)")
    parser.add_argument("--backlog", type=int, help="workers' TaskBacklog (default 0)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="scaleout-probe-"))
    figures: dict[str, Any] = {
        "tasks": args.tasks,
        "workers": args.workers,
        "max_task_count": args.max_task_count or 10,
        "task_backlog": args.backlog or 0,
    }
    broker = beam_pid()
    with (
        fresh_vhost() as vhost,
        catalog_database(args.dialect, folder, "probe") as url,
        running_cluster(
            folder, url, amqp_url(vhost), args.workers, args.max_task_count, args.backlog
        ) as cluster,
    ):
        cluster.warm_up(10)
        profiles = []

        def profile_window() -> None:  # once the enqueue is done: the run, not the enqueue
            if not args.profile:
                return
            worker_pid = cluster.children.procs["bench-1"].pid
            targets = {"master": cluster.master_pid, "worker": worker_pid}
            for name, pid in targets.items():
                path = folder / f"profile-{name}.txt"
                proc = profile.start(pid, path, args.profile)
                if proc is not None:
                    profiles.append((name, path, proc))

        result = cluster.throughput(
            args.tasks,
            timeout_s=max(120.0, args.tasks / 3),
            broker_pid=broker,
            on_window=profile_window,
        )
        beam_cpu = result.rabbitmq_cpu_s
        for name, path, proc in profiles:
            proc.wait(120)
            folded = profile.fold(name, path, top=15)
            if folded is not None:
                figures[f"{name}_self"] = [[f, round(p, 1)] for f, p in folded.top_self]
                figures[f"{name}_incl"] = [[f, round(p, 1)] for f, p in folded.top_inclusive]
                figures[f"{name}_waits"] = [[f, round(p, 1)] for f, p in folded.waits]
                figures[f"{name}_busy_samples"] = folded.samples
    per_exec = 1000.0 / result.executions
    figures |= {
        "per_s": round(result.per_s, 1),
        "succeeded": result.succeeded,
        "master_cpu_ms": round(result.master_cpu_s * per_exec, 2),
        "workers_cpu_ms": round(result.workers_cpu_s * per_exec, 2),
        "rabbitmq_cpu_ms": round(beam_cpu * per_exec, 2),
        "folder": str(folder),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
