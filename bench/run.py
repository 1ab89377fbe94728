"""``make bench`` / ``python -m bench.run [--quick]``: every figure of issue 9 in one run.

Prints a table, then one final JSON line with every figure. ``--quick`` is a small smoke
run (N=200, 4 workers, SQLite only) that finishes in about a minute or two.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench import peers, profile, rawpika, scale
from bench.infra import (
    Children,
    amqp_url,
    catalog_database,
    fresh_vhost,
    pg_version,
    rabbitmq_version,
)
from bench.ours import E2E, Cluster, Latency, running_cluster


@dataclass(frozen=True)
class Plan:
    tasks: int
    worker_counts: tuple[int, ...]
    dialects: tuple[str, ...]
    light_samples: int
    saturated: int
    history_small: int
    history_large: int
    history_burst: int
    heartbeat_workers: int
    heartbeat_seconds: float
    profile_s: int
    wide_slots: int = 0
    """MaxTaskCount of an extra headline run (0: none)."""


FULL = Plan(2000, (1, 4), ("sqlite", "postgresql"), 100, 400, 1000, 100_000, 400, 500, 15, 20, 40)
"""Heartbeats: 500 simulated workers. They register disabled, so the master declares no
queues for them (a first trial, when it still did, made 1,000 quorum queues)."""
QUICK = Plan(200, (4,), ("sqlite",), 20, 60, 100, 2000, 50, 50, 3, 0)

out = Console(stderr=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (N=200)")
    parser.add_argument("--tasks", type=int, help="N, executions per throughput run")
    parser.add_argument("--heartbeat-workers", type=int, help="simulated workers (default 500)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.tasks:
        plan = dataclasses.replace(plan, tasks=args.tasks)
    if args.heartbeat_workers:
        plan = dataclasses.replace(plan, heartbeat_workers=args.heartbeat_workers)
    folder = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    began = time.monotonic()
    figures: dict[str, Any] = {"plan": plan.__dict__, "folder": str(folder)}
    figures["environment"] = environment()
    out.print(f"[bold]scaleout bench[/] N={plan.tasks}; run folder {folder}")
    ours = measure_ours(plan, folder, figures)
    measure_peers(plan, folder, figures)
    measure_scale(plan, folder, figures)
    ratios(plan, ours, figures)
    figures["wall_s"] = round(time.monotonic() - began, 1)
    out.print(table(figures))
    print(json.dumps(clean(figures), sort_keys=True))
    return 0


# -- phases ----------------------------------------------------------------------------------


def measure_ours(plan: Plan, folder: Path, figures: dict[str, Any]) -> dict[str, E2E]:
    results: dict[str, E2E] = {}
    for dialect in plan.dialects:
        for workers in plan.worker_counts:
            key = f"{dialect}_w{workers}"
            out.print(f"scaleout end to end: {dialect}, {workers} worker(s) ...")
            where = folder / f"ours-{key}"
            where.mkdir()
            with (
                fresh_vhost() as vhost,
                catalog_database(dialect, where, key) as url,
                running_cluster(where, url, amqp_url(vhost), workers) as cluster,
            ):
                cluster.warm_up(10)
                profiles = start_profiles(plan, cluster, where, workers)
                result = cluster.throughput(plan.tasks, timeout_s=max(120.0, plan.tasks / 3))
                results[key] = result
                figures[f"e2e_{key}"] = e2e_figures(result)
                finish_profiles(profiles, figures, key)
                if workers == min(plan.worker_counts):
                    figures[f"latency_light_{dialect}"] = latency_figures(
                        cluster.light_latency(plan.light_samples)
                    )
                if workers == max(plan.worker_counts):
                    figures[f"latency_saturated_{dialect}"] = latency_figures(
                        cluster.saturated_latency(plan.saturated, result.per_s)
                    )
    if plan.wide_slots:
        key = f"sqlite_w{max(plan.worker_counts)}_mtc{plan.wide_slots}"
        results[key] = measure_wide(plan, folder, key)
        figures[f"e2e_{key}"] = e2e_figures(results[key])
    return results


def measure_wide(plan: Plan, folder: Path, key: str) -> E2E:
    """The headline run again with MaxTaskCount raised: how much of the throughput is
    bounded by slots x round trip rather than by CPU."""
    out.print(f"scaleout end to end: {key} (MaxTaskCount {plan.wide_slots}) ...")
    where = folder / f"ours-{key}"
    where.mkdir()
    workers = max(plan.worker_counts)
    with (
        fresh_vhost() as vhost,
        catalog_database("sqlite", where, key) as url,
        running_cluster(where, url, amqp_url(vhost), workers, plan.wide_slots) as cluster,
    ):
        cluster.warm_up(10)
        return cluster.throughput(plan.tasks, timeout_s=max(120.0, plan.tasks / 3))


def start_profiles(
    plan: Plan, cluster: Cluster, where: Path, workers: int
) -> list[tuple[str, Path, Any]]:
    if not plan.profile_s or workers != max(plan.worker_counts):
        return []
    targets = {"master": cluster.master_pid, "worker": cluster.children.procs["bench-1"].pid}
    started = []
    for name, pid in targets.items():
        path = where / f"profile-{name}.txt"
        proc = profile.start(pid, path, plan.profile_s)
        if proc is not None:
            started.append((name, path, proc))
    return started


def finish_profiles(
    profiles: list[tuple[str, Path, Any]], figures: dict[str, Any], key: str
) -> None:
    for name, path, proc in profiles:
        try:
            proc.wait(60)
        except Exception:  # a profiler that hangs must not stop the bench
            proc.kill()
        folded = profile.fold(name, path)
        if folded is not None:
            figures[f"profile_{key}_{name}"] = {
                "busy_samples": folded.samples,
                "inclusive_pct": [[f, round(p, 1)] for f, p in folded.top_inclusive],
                "self_pct": [[f, round(p, 1)] for f, p in folded.top_self],
            }


def measure_peers(plan: Plan, folder: Path, figures: dict[str, Any]) -> None:
    where = folder / "peers"
    where.mkdir()
    children = Children(where)
    timeout = max(120.0, plan.tasks / 10)
    with fresh_vhost() as vhost:
        url = amqp_url(vhost)
        for workers in plan.worker_counts:
            out.print(f"peers: {workers} worker(s) ...")
            celery = peers.run_celery(children, url, workers, plan.tasks, timeout_s=timeout)
            figures[f"celery_w{workers}"] = peer_figures(celery)
            dramatiq = peers.run_dramatiq(children, url, workers, plan.tasks, timeout_s=timeout)
            figures[f"dramatiq_w{workers}"] = peer_figures(dramatiq)
            ceiling = rawpika.run_ceiling(children, url, workers, plan.tasks, timeout_s=timeout)
            figures[f"raw_pika_w{workers}"] = {
                "per_s": round(ceiling.per_s, 1),
                "completed": ceiling.completed,
                "task_bytes": ceiling.task_bytes,
                "status_bytes": ceiling.status_bytes,
            }
            for dialect in plan.dialects:
                with catalog_database(dialect, where, f"celery_{dialect}_{workers}") as db:
                    init_catalog(db)
                    result = peers.run_celery(
                        children,
                        url,
                        workers,
                        plan.tasks,
                        backend_catalog_url=db,
                        timeout_s=timeout,
                    )
                figures[f"celery_db_{dialect}_w{workers}"] = peer_figures(result)


def init_catalog(url: str) -> None:
    from dispatcher.catalog import Catalog  # noqa: PLC0415

    catalog = Catalog.open(url)
    try:
        catalog.init()
    finally:
        catalog.close()


def measure_scale(plan: Plan, folder: Path, figures: dict[str, Any]) -> None:
    for dialect in plan.dialects:
        figures[f"history_{dialect}"] = measure_history(plan, folder, dialect)
    dialect = "sqlite"
    where = folder / "heartbeats"
    where.mkdir()
    out.print(f"heartbeats: {plan.heartbeat_workers} simulated workers ...")
    with (
        fresh_vhost() as vhost,
        catalog_database(dialect, where, "heartbeats") as url,
        running_cluster(where, url, amqp_url(vhost), 0) as cluster,
    ):
        beats = scale.heartbeat_run(
            cluster,
            cluster.children,
            where,
            workers=plan.heartbeat_workers,
            seconds=plan.heartbeat_seconds,
        )
    figures["heartbeats_sqlite"] = {
        "workers": beats.workers,
        "seconds": beats.seconds,
        "first_sight_s": round(beats.first_sight_s, 1),
        "master_cpu_percent": round(beats.master_cpu_percent, 1),
        "lag_p50_ms": round(beats.lag_p50_ms, 1),
        "lag_p99_ms": round(beats.lag_p99_ms, 1),
        "lag_max_ms": round(beats.lag_max_ms, 1),
        "backlog_at_end": beats.backlog_at_end,
    }


def measure_history(plan: Plan, folder: Path, dialect: str) -> dict[str, Any]:
    where = folder / f"history-{dialect}"
    where.mkdir()
    out.print(
        f"history ({dialect}): {plan.history_small} then {plan.history_large} "
        "finished executions ..."
    )
    with (
        fresh_vhost() as vhost,
        catalog_database(dialect, where, "history") as url,
        running_cluster(where, url, amqp_url(vhost), 1) as cluster,
    ):
        history = scale.history_run(
            cluster,
            small=plan.history_small,
            large=plan.history_large,
            samples=plan.light_samples,
            burst=plan.history_burst,
        )
    return {
        "small": history.small,
        "large": history.large,
        "latency_small": latency_figures(history.latency_small),
        "latency_large": latency_figures(history.latency_large),
        "p50_ratio": round(history.ratio, 2),
        "seed_s": round(history.seed_s, 1),
        "burst_at_large": e2e_figures(history.burst_large),
        "master_peak_rss_mb": round(history.master_peak_rss_mb, 1),
    }


# -- figures ---------------------------------------------------------------------------------


def e2e_figures(result: E2E) -> dict[str, Any]:
    return {
        "per_s": round(result.per_s, 1),
        "executions": result.executions,
        "succeeded": result.succeeded,
        "elapsed_s": round(result.elapsed_s, 2),
        "enqueue_s": round(result.enqueue_s, 2),
        "enqueue_per_s": round(result.executions / result.enqueue_s, 1),
        "master_cpu_ms_per_task": round(1000 * result.master_cpu_s / result.executions, 2),
        "workers_cpu_ms_per_task": round(1000 * result.workers_cpu_s / result.executions, 2),
    }


def latency_figures(latency: Latency) -> dict[str, Any]:
    figures = {"count": latency.count, "p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms}
    if latency.offered_per_s:
        figures["offered_per_s"] = round(latency.offered_per_s, 1)
    return figures


def peer_figures(result: peers.PeerResult) -> dict[str, Any]:
    figures: dict[str, Any] = {"per_s": round(result.per_s, 1), "completed": result.completed}
    if result.stored is not None:
        figures["stored"] = result.stored
    return figures


def ratios(plan: Plan, ours: dict[str, E2E], figures: dict[str, Any]) -> None:
    for key, result in ours.items():
        dialect, workers = key.split("_mtc")[0].rsplit("_w", 1)
        for peer in ("celery", "dramatiq", "raw_pika"):
            figures[f"e2e_vs_{peer}_{key}"] = _ratio(result.per_s, figures[f"{peer}_w{workers}"])
        figures[f"e2e_vs_celery_db_{key}"] = _ratio(
            result.per_s, figures[f"celery_db_{dialect}_w{workers}"]
        )
    head = f"sqlite_w{max(plan.worker_counts)}"
    for peer in ("celery", "celery_db", "dramatiq", "raw_pika"):
        figures[f"e2e_vs_{peer}"] = figures[f"e2e_vs_{peer}_{head}"]
    figures["e2e_per_s"] = round(ours[head].per_s, 1)
    light = figures["latency_light_sqlite"]
    figures["dispatch_p50_ms"] = light["p50_ms"]
    figures["dispatch_p99_ms"] = light["p99_ms"]
    saturated = figures["latency_saturated_sqlite"]
    figures["dispatch_saturated_p50_ms"] = saturated["p50_ms"]
    figures["dispatch_saturated_p99_ms"] = saturated["p99_ms"]
    histories = [figures[f"history_{d}"] for d in plan.dialects]
    # The worse of the catalogs is the headline: the goal holds only if it holds for both.
    figures["history_latency_ratio"] = max(h["p50_ratio"] for h in histories)
    figures["master_rss_mb"] = max(h["master_peak_rss_mb"] for h in histories)
    figures["heartbeat_master_cpu_percent"] = figures["heartbeats_sqlite"]["master_cpu_percent"]
    figures["heartbeat_lag_p99_ms"] = figures["heartbeats_sqlite"]["lag_p99_ms"]


def _ratio(ours: float, peer: dict[str, Any]) -> float:
    theirs = float(peer["per_s"])
    return round(ours / theirs, 4) if theirs > 0 else float("nan")


def environment() -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    try:
        postgres = pg_version()
    except Exception:
        postgres = "unreachable"
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": str(_cpus()),
        "python": platform.python_version(),
        "rabbitmq": rabbitmq_version(),
        "postgresql": postgres,
        "sqlite": sqlite3.sqlite_version,
        **{n: pkg(n) for n in ("pika", "sqlalchemy", "psycopg", "celery", "dramatiq")},
        "command": " ".join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
    }


def _cpus() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0


def clean(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def table(figures: dict[str, Any]) -> Table:
    t = Table(title="scaleout bench", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("figure", "value", "note"):
        t.add_column(name)
    for key in sorted(figures):
        value = figures[key]
        if key.startswith("e2e_vs_") or key in _HEADLINES:
            t.add_row(key, f"{value}", _HEADLINES.get(key, "ours / theirs"))
    for key in sorted(figures):
        value = figures[key]
        if isinstance(value, dict) and "per_s" in value:
            t.add_row(key, f"{value['per_s']}/s", _note(value))
    for key in ("latency_light_sqlite", "latency_light_postgresql", "latency_saturated_sqlite"):
        if key in figures:
            v = figures[key]
            t.add_row(key, f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms", f"n={v['count']}")
    if "latency_saturated_postgresql" in figures:
        v = figures["latency_saturated_postgresql"]
        t.add_row("latency_saturated_postgresql", f"p50 {v['p50_ms']}, p99 {v['p99_ms']} ms", "")
    return t


def _note(value: dict[str, Any]) -> str:
    parts = []
    for name in ("elapsed_s", "enqueue_per_s", "master_cpu_ms_per_task", "workers_cpu_ms_per_task"):
        if name in value:
            parts.append(f"{name}={value[name]}")
    if "stored" in value:
        parts.append(f"stored={value['stored']}")
    return ", ".join(parts)


_HEADLINES = {
    "e2e_per_s": "executions/s, SQLite, most workers",
    "dispatch_p50_ms": "start_execution -> started, light load, SQLite",
    "dispatch_p99_ms": "start_execution -> started, light load, SQLite",
    "dispatch_saturated_p50_ms": "same, at saturation",
    "dispatch_saturated_p99_ms": "same, at saturation",
    "history_latency_ratio": "p50 at large history / p50 at small",
    "master_rss_mb": "master peak RSS during the large-history run",
    "heartbeat_master_cpu_percent": "master CPU (% of one core) under the simulated heartbeats",
    "heartbeat_lag_p99_ms": "sent_at -> LastOnlineTime",
}


if __name__ == "__main__":
    sys.exit(main())
