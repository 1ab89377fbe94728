"""``make bench`` / ``python -m bench.run [--quick] [--tasks N] [--reps R]``: every figure of
issue 13 in one run.

Every system is measured the same way: its work is enqueued first (outside the timed
window), then its workers go; throughput is (N - 1) / (first completion -> last
completion). Each system runs ``reps`` times (3) and the median is reported; a run counts
only if it has N >= 20,000 or >= 10 s between first and last completion, and N for the
next run is sized from the last one's rate (so a slow system runs ~12 s, a fast one
20,000), with at most two extra runs to get three that count. Ratios compare figures of
this one run.

Prints a table, then one final JSON line with every figure. ``--quick`` is a small smoke
run (one repetition, small N, SQLite only for us, no history at scale) of a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench import peers, profile, protocol_loop, rawpika, scale
from bench.infra import (
    Children,
    amqp_url,
    beam_pid,
    catalog_database,
    fresh_vhost,
    pg_version,
    rabbitmq_version,
)
from bench.ours import E2E, Cluster, Latency, running_cluster


@dataclass(frozen=True)
class Plan:
    reps: int
    """Runs that count per system and configuration (their median is reported)."""
    min_steady_s: float
    """A run counts with at least this long between first and last completion ..."""
    max_tasks: int
    """... or with at least this N (and N never grows past it)."""
    first_tasks: int
    """N of a recording system's first run (ours, Celery + db, procrastinate)."""
    first_tasks_fast: int
    """N of a first run of a system that records nothing (Celery, Dramatiq, raw loops)."""
    dialects: tuple[str, ...]
    workers: int
    """Our worker processes (and every peer's, in the headline configuration)."""
    slots: int
    """MaxTaskCount: each worker's concurrent tasks (and each peer process's)."""
    recording_peer_workers: tuple[int, ...]
    """Worker counts tried for procrastinate (the best one counts)."""
    celery_db_configs: tuple[tuple[str, int, int], ...]
    """(result backend's database, worker processes, pool processes each) tried for
    Celery + db: ours' concurrency, and issue 9's best (one process, one child)."""
    light_samples: int
    saturated: int
    enqueue_singles: int = 500
    """Executions enqueued one call at a time (each way) for the single-call rates."""
    history: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Dialect -> (small, large) finished executions for the history latency."""
    history_burst: int = 400
    heartbeat_workers: int = 500
    heartbeat_seconds: float = 15
    profile_s: int = 20
    wide_slots: int = 0
    """MaxTaskCount of an extra one-run headline (0: none)."""
    backlog: int = 0
    """TaskBacklog of an extra one-run headline at MaxTaskCount ``slots`` (0: none)."""


FULL = Plan(
    reps=3,
    min_steady_s=10.0,
    max_tasks=20_000,
    first_tasks=4000,
    first_tasks_fast=20_000,
    dialects=("sqlite", "postgresql"),
    workers=4,
    slots=10,
    recording_peer_workers=(1, 4),
    celery_db_configs=(("sqlite", 1, 1), ("sqlite", 4, 10), ("postgresql", 4, 10)),
    light_samples=100,
    saturated=1000,
    history={"sqlite": (1000, 100_000), "postgresql": (1000, 1_000_000)},
    profile_s=15,
    wide_slots=40,
    backlog=10,
)
"""Heartbeats: 500 simulated workers. They register disabled, so the master declares no
queues for them."""
QUICK = Plan(
    reps=1,
    min_steady_s=0.0,
    max_tasks=2000,
    first_tasks=300,
    first_tasks_fast=2000,
    dialects=("sqlite",),
    workers=4,
    slots=10,
    recording_peer_workers=(4,),
    celery_db_configs=(("sqlite", 4, 10),),
    light_samples=20,
    saturated=100,
    history={"sqlite": (100, 2000)},
    history_burst=50,
    enqueue_singles=50,
    heartbeat_workers=50,
    heartbeat_seconds=3,
    profile_s=0,
    backlog=10,
)

out = Console(stderr=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--tasks", type=int, help="N of each system's first run")
    parser.add_argument("--reps", type=int, help="runs that count per system (default 3)")
    parser.add_argument("--heartbeat-workers", type=int, help="simulated workers (default 500)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.tasks:
        plan = dataclasses.replace(plan, first_tasks=args.tasks, first_tasks_fast=args.tasks)
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.heartbeat_workers:
        plan = dataclasses.replace(plan, heartbeat_workers=args.heartbeat_workers)
    folder = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    began = time.monotonic()
    figures: dict[str, Any] = {"plan": dataclasses.asdict(plan), "folder": str(folder)}
    figures["environment"] = environment()
    out.print(f"[bold]scaleout bench[/] run folder {folder}")
    broker = beam_pid()
    measure_ours(plan, folder, figures, broker)
    measure_peers(plan, folder, figures, broker)
    measure_scale(plan, folder, figures)
    headlines(plan, figures)
    figures["wall_s"] = round(time.monotonic() - began, 1)
    out.print(table(figures))
    print(json.dumps(clean(figures), sort_keys=True))
    return 0


# -- repetitions -----------------------------------------------------------------------------

Run = dict[str, Any]
"""One run's figures: at least tasks, completed, steady_s and per_s."""


def repeat(plan: Plan, label: str, first_tasks: int, once: Callable[[int, int], Run]) -> Run:
    """``once(n, index)`` until ``plan.reps`` runs count (at most two more); the medians of
    the runs that count (all runs if none did), and every run under ``runs``."""
    runs: list[Run] = []
    counted: list[Run] = []
    tasks = first_tasks
    for index in range(plan.reps + 2):
        if len(counted) >= plan.reps:
            break
        out.print(f"  {label}: run {index + 1}, N={tasks} ...")
        run = once(tasks, index)
        run["counts"] = _counts(plan, run)
        runs.append(run)
        if run["counts"]:
            counted.append(run)
        if plan.min_steady_s and run["per_s"] > 0:
            wanted = math.ceil(run["per_s"] * plan.min_steady_s * 1.2)
            tasks = min(plan.max_tasks, max(tasks, wanted))
    chosen = counted or runs
    keys = dict.fromkeys(k for r in chosen for k in r)  # a figure of one run only (commits)
    summary: Run = {}
    for key in keys:
        having = [r for r in chosen if key in r]
        if _numeric(having, key):
            summary[key] = _median(having, key)
    summary["repetitions"] = len(chosen)
    summary["runs"] = [{k: v for k, v in r.items() if k != "counts"} for r in runs]
    return summary


def _counts(plan: Plan, run: Run) -> bool:
    if not plan.min_steady_s:
        return True
    complete = bool(run["completed"] >= run["tasks"])
    return complete and bool(run["tasks"] >= plan.max_tasks or run["steady_s"] >= plan.min_steady_s)


def _numeric(runs: list[Run], key: str) -> bool:
    return all(
        isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool) for r in runs
    )


def _median(runs: list[Run], key: str) -> float | int:
    value = statistics.median(float(r[key]) for r in runs)
    if all(isinstance(r[key], int) for r in runs) and value.is_integer():
        return int(value)
    return round(float(value), 3)


# -- ours ------------------------------------------------------------------------------------


def measure_ours(plan: Plan, folder: Path, figures: dict[str, Any], broker: int | None) -> None:
    for dialect in plan.dialects:
        key = f"{dialect}_w{plan.workers}"
        out.print(f"scaleout end to end: {dialect}, {plan.workers} workers ...")
        where = folder / f"ours-{key}"
        where.mkdir()
        with (
            fresh_vhost() as vhost,
            catalog_database(dialect, where, key) as url,
            running_cluster(where, url, amqp_url(vhost), plan.workers, plan.slots) as cluster,
        ):
            cluster.warm_up(10)

            def once(
                tasks: int,
                index: int,
                cluster: Cluster = cluster,
                where: Path = where,
                key: str = key,
            ) -> Run:
                # The profile samples the second run's window (not its enqueue); commits
                # are counted in that run too.
                profiles: list[tuple[str, Path, Any]] = []

                def profile_window() -> None:
                    if index == 1:
                        profiles.extend(start_profiles(plan, cluster, where))

                result = cluster.throughput(
                    tasks,
                    timeout_s=max(120.0, tasks / 3),
                    broker_pid=broker,
                    count_commits=index == 1,
                    on_window=profile_window,
                )
                if profiles:
                    finish_profiles(profiles, figures, key)
                return e2e_figures(result)

            series = repeat(plan, f"scaleout {key}", plan.first_tasks, once)
            single, ssis = cluster.enqueue_one_at_a_time(plan.enqueue_singles)
            series["enqueue_single_per_s"] = round(single, 1)
            series["enqueue_ssis_per_s"] = round(ssis, 1)
            figures[f"e2e_{key}"] = series
            light = cluster.light_latency(plan.light_samples)
            figures[f"latency_light_{dialect}"] = latency_figures(light)
            offered = 0.8 * float(series["per_s"])
            saturated = cluster.saturated_latency(plan.saturated, offered)
            figures[f"latency_saturated_{dialect}"] = latency_figures(saturated)
    if plan.wide_slots:
        key = f"sqlite_w{plan.workers}_mtc{plan.wide_slots}"
        figures[f"e2e_{key}"] = measure_variant(plan, folder, key, broker, plan.wide_slots)
    if plan.backlog:
        key = f"sqlite_w{plan.workers}_backlog{plan.backlog}"
        figures[f"e2e_{key}"] = measure_variant(plan, folder, key, broker, plan.slots, plan.backlog)


def measure_variant(
    plan: Plan, folder: Path, key: str, broker: int | None, slots: int, backlog: int = 0
) -> Run:
    """The headline once more (one run) with MaxTaskCount raised, or with a TaskBacklog:
    how much of the throughput is bounded by slots x round trip rather than by CPU, and
    how much of that the backlog wins back while MaxTaskCount still bounds what runs."""
    out.print(f"scaleout end to end: {key} (MaxTaskCount {slots}, backlog {backlog}), one run")
    where = folder / f"ours-{key}"
    where.mkdir()
    with (
        fresh_vhost() as vhost,
        catalog_database("sqlite", where, key) as url,
        running_cluster(
            where, url, amqp_url(vhost), plan.workers, slots, backlog or None
        ) as cluster,
    ):
        cluster.warm_up(10)
        tasks = plan.first_tasks
        return e2e_figures(cluster.throughput(tasks, max(120.0, tasks / 3), broker))


def start_profiles(plan: Plan, cluster: Cluster, where: Path) -> list[tuple[str, Path, Any]]:
    if not plan.profile_s:
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
                "all_samples": folded.total,
                "inclusive_pct": [[f, round(p, 1)] for f, p in folded.top_inclusive],
                "self_pct": [[f, round(p, 1)] for f, p in folded.top_self],
                "waits_pct_of_all": [[f, round(p, 1)] for f, p in folded.waits],
            }


# -- the peers and the raw loops -------------------------------------------------------------


def measure_peers(plan: Plan, folder: Path, figures: dict[str, Any], broker: int | None) -> None:
    where = folder / "peers"
    where.mkdir()
    children = Children(where)
    w, slots = plan.workers, plan.slots
    fast = plan.first_tasks_fast
    with fresh_vhost() as vhost:
        url = amqp_url(vhost)

        def loop(tasks: int, _index: int) -> Run:
            return loop_figures(
                protocol_loop.run(children, url, w, slots, tasks, _timeout(tasks), broker)
            )

        figures[f"protocol_loop_w{w}"] = repeat(plan, "protocol-matched loop", fast, loop)

        def roundtrip(tasks: int, _index: int) -> Run:
            result = rawpika.run_roundtrip(children, url, w, tasks, timeout_s=_timeout(tasks))
            return {
                "tasks": result.tasks,
                "completed": result.completed,
                "steady_s": round(result.elapsed_s, 3),
                "per_s": round(result.per_s, 1),
                "task_bytes": result.task_bytes,
                "status_bytes": result.status_bytes,
            }

        figures[f"raw_roundtrip_w{w}"] = repeat(plan, "raw round trip", fast, roundtrip)

        def celery(tasks: int, _index: int) -> Run:
            result = peers.run_celery(
                children, url, w, tasks, slots=slots, timeout_s=_timeout(tasks)
            )
            return peer_figures(result)

        figures[f"celery_w{w}"] = repeat(plan, "celery", fast, celery)

        def dramatiq(tasks: int, _index: int) -> Run:
            result = peers.run_dramatiq(
                children, url, w, tasks, slots=slots, timeout_s=_timeout(tasks)
            )
            return peer_figures(result)

        figures[f"dramatiq_w{w}"] = repeat(plan, "dramatiq", fast, dramatiq)
        for dialect, workers, pool in plan.celery_db_configs:
            measure_celery_db(plan, children, url, dialect, workers, pool, figures)
    for workers in plan.recording_peer_workers:
        measure_procrastinate(plan, children, workers, figures)


def measure_celery_db(
    plan: Plan,
    children: Children,
    url: str,
    dialect: str,
    workers: int,
    pool: int,
    figures: dict[str, Any],
) -> None:
    key = f"celery_db_{dialect}_w{workers}_c{pool}"

    def once(tasks: int, index: int) -> Run:
        with catalog_database(dialect, children.folder, f"{key}_{index}") as db:
            init_catalog(db)
            result = peers.run_celery(
                children,
                url,
                workers,
                tasks,
                slots=pool,
                backend_catalog_url=db,
                timeout_s=_timeout(tasks, slow=True),
            )
        return peer_figures(result)

    figures[key] = repeat(plan, key, plan.first_tasks, once)


def measure_procrastinate(
    plan: Plan, children: Children, workers: int, figures: dict[str, Any]
) -> None:
    key = f"procrastinate_w{workers}"
    with catalog_database("postgresql", children.folder, key) as db:

        def once(tasks: int, _index: int) -> Run:
            result = peers.run_procrastinate(
                children, db, workers, tasks, slots=plan.slots, timeout_s=_timeout(tasks, True)
            )
            return peer_figures(result)

        figures[key] = repeat(plan, key, plan.first_tasks, once)


def _timeout(tasks: int, slow: bool = False) -> float:
    return max(120.0, tasks / (20 if slow else 100))


def init_catalog(url: str) -> None:
    from dispatcher.catalog import Catalog  # noqa: PLC0415

    catalog = Catalog.open(url)
    try:
        catalog.init()
    finally:
        catalog.close()


# -- scale: history and heartbeats -----------------------------------------------------------


def measure_scale(plan: Plan, folder: Path, figures: dict[str, Any]) -> None:
    for dialect, (small, large) in plan.history.items():
        figures[f"history_{dialect}"] = measure_history(plan, folder, dialect, small, large)
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


def measure_history(
    plan: Plan, folder: Path, dialect: str, small: int, large: int
) -> dict[str, Any]:
    where = folder / f"history-{dialect}"
    where.mkdir()
    out.print(f"history ({dialect}): {small} then {large} finished executions ...")
    with (
        fresh_vhost() as vhost,
        catalog_database(dialect, where, "history") as url,
        running_cluster(where, url, amqp_url(vhost), 1) as cluster,
    ):
        history = scale.history_run(
            cluster, small=small, large=large, samples=plan.light_samples, burst=plan.history_burst
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


def e2e_figures(result: E2E) -> Run:
    n = result.executions
    figures: Run = {
        "tasks": n,
        "completed": result.succeeded,
        "per_s": round(result.per_s, 1),
        "steady_s": round(result.steady_s, 3),
        "enable_to_last_s": round(result.elapsed_s, 3),
        "enqueue_s": round(result.enqueue_s, 2),
        "enqueue_per_s": round(n / result.enqueue_s, 1) if result.enqueue_s > 0 else 0.0,
        "master_cpu_ms_per_exec": round(1000 * result.master_cpu_s / n, 3),
        "workers_cpu_ms_per_exec": round(1000 * result.workers_cpu_s / n, 3),
        "rabbitmq_cpu_ms_per_exec": round(1000 * result.rabbitmq_cpu_s / n, 3),
    }
    if result.commits is not None:
        figures["commits_per_exec"] = round(result.commits / n, 3)
    return figures


def loop_figures(result: protocol_loop.LoopResult) -> Run:
    n = result.tasks
    return {
        "tasks": n,
        "completed": result.completed,
        "per_s": round(result.per_s, 1),
        "steady_s": round(result.steady_s, 3),
        "slots": result.workers * result.slots,
        "master_cpu_ms_per_exec": round(1000 * result.master_cpu_s / n, 3),
        "workers_cpu_ms_per_exec": round(1000 * result.workers_cpu_s / n, 3),
        "rabbitmq_cpu_ms_per_exec": round(1000 * result.rabbitmq_cpu_s / n, 3),
        "assign_bytes": result.sizes.assign,
        "started_bytes": result.sizes.started,
        "finished_bytes": result.sizes.finished,
    }


def latency_figures(latency: Latency) -> dict[str, Any]:
    figures = {"count": latency.count, "p50_ms": latency.p50_ms, "p99_ms": latency.p99_ms}
    if latency.offered_per_s:
        figures["offered_per_s"] = round(latency.offered_per_s, 1)
    return figures


def peer_figures(result: peers.PeerResult) -> Run:
    figures: Run = {
        "tasks": result.tasks,
        "completed": result.completed,
        "per_s": round(result.per_s, 1),
        "steady_s": round(result.elapsed_s, 3),
    }
    if result.stored is not None:
        figures["stored"] = result.stored
    if result.commits is not None and result.completed:
        figures["commits_per_exec"] = round(result.commits / result.completed, 3)
    return figures


def best(figures: dict[str, Any], prefix: str) -> tuple[str, float]:
    """The configuration (figure key) with the highest median rate among ``prefix*``."""
    found = [
        (k, float(v["per_s"]))
        for k, v in figures.items()
        if k.startswith(prefix) and isinstance(v, dict) and "per_s" in v
    ]
    if not found:
        return "", float("nan")
    return max(found, key=lambda kv: kv[1])


def headlines(plan: Plan, figures: dict[str, Any]) -> None:
    w = plan.workers
    head = figures[f"e2e_sqlite_w{w}"]
    ours = float(head["per_s"])
    figures["e2e_per_s"] = head["per_s"]
    backlog = figures.get(f"e2e_sqlite_w{w}_backlog{plan.backlog}")
    figures["e2e_backlog_per_s"] = backlog["per_s"] if backlog else None
    pg = figures.get(f"e2e_postgresql_w{w}")
    ours_pg = float(pg["per_s"]) if pg else float("nan")
    figures["e2e_postgresql_per_s"] = pg["per_s"] if pg else None
    for peer, prefix in (
        ("protocol_loop", "protocol_loop_w"),
        ("raw_roundtrip", "raw_roundtrip_w"),
        ("celery", "celery_w"),
        ("dramatiq", "dramatiq_w"),
    ):
        figures[f"e2e_vs_{peer}"] = _ratio(ours, best(figures, prefix)[1])
    key, rate = best(figures, "celery_db_")
    figures["celery_db_best"] = key
    figures["e2e_vs_celery_db_best"] = _ratio(ours, rate)
    figures["e2e_postgresql_vs_celery_db_best"] = _ratio(ours_pg, rate)
    key, rate = best(figures, "procrastinate_w")
    figures["procrastinate_best"] = key
    # Like for like: our PostgreSQL catalog against the queue that keeps its jobs there.
    figures["e2e_vs_procrastinate"] = _ratio(ours_pg, rate)
    figures["e2e_sqlite_vs_procrastinate"] = _ratio(ours, rate)
    for name in ("master", "workers", "rabbitmq"):
        figures[f"{name}_cpu_ms_per_exec"] = head[f"{name}_cpu_ms_per_exec"]
    for name in ("enqueue_per_s", "enqueue_single_per_s", "enqueue_ssis_per_s"):
        figures[name] = head.get(name)
    if pg:
        figures["enqueue_postgresql_per_s"] = pg["enqueue_per_s"]
        figures["enqueue_single_postgresql_per_s"] = pg.get("enqueue_single_per_s")
        figures["commits_per_exec_postgresql"] = pg.get("commits_per_exec")
    light = figures["latency_light_sqlite"]
    figures["dispatch_p50_ms"] = light["p50_ms"]
    figures["dispatch_p99_ms"] = light["p99_ms"]
    saturated = figures["latency_saturated_sqlite"]
    figures["dispatch_saturated_p50_ms"] = saturated["p50_ms"]
    figures["dispatch_saturated_p99_ms"] = saturated["p99_ms"]
    # The goal is stated for PostgreSQL at its largest history; SQLite's is reported beside.
    history = figures.get("history_postgresql") or figures["history_sqlite"]
    figures["history_latency_ratio"] = history["p50_ratio"]
    figures["history_latency_at"] = f"{history['large']} finished vs {history['small']}"
    histories = [v for k, v in figures.items() if k.startswith("history_") and isinstance(v, dict)]
    figures["master_rss_mb"] = max(h["master_peak_rss_mb"] for h in histories)
    figures["heartbeat_master_cpu_percent"] = figures["heartbeats_sqlite"]["master_cpu_percent"]
    figures["heartbeat_lag_p99_ms"] = figures["heartbeats_sqlite"]["lag_p99_ms"]


def _ratio(ours: float, theirs: float) -> float:
    if math.isnan(ours) or math.isnan(theirs) or theirs <= 0:
        return float("nan")
    return round(ours / theirs, 4)


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
        **{
            n: pkg(n)
            for n in ("pika", "sqlalchemy", "psycopg", "celery", "dramatiq", "procrastinate")
        },
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
    for key, note in _HEADLINES.items():
        if key in figures:
            t.add_row(key, f"{figures[key]}", note)
    for key in sorted(figures):
        if key.startswith("e2e_vs_") and key not in _HEADLINES:
            t.add_row(key, f"{figures[key]}", "ours / theirs")
    for key in sorted(figures):
        value = figures[key]
        if isinstance(value, dict) and "per_s" in value and "repetitions" in value:
            t.add_row(key, f"{value['per_s']}/s", _note(value))
    for key in sorted(figures):
        if key.startswith("latency_"):
            v = figures[key]
            t.add_row(key, f"p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms", f"n={v['count']}")
    return t


def _note(value: dict[str, Any]) -> str:
    parts = [f"median of {value['repetitions']}", f"N={value.get('tasks')}"]
    for name in (
        "steady_s",
        "enqueue_per_s",
        "master_cpu_ms_per_exec",
        "workers_cpu_ms_per_exec",
        "rabbitmq_cpu_ms_per_exec",
        "commits_per_exec",
        "stored",
    ):
        if name in value:
            parts.append(f"{name}={value[name]}")
    return ", ".join(parts)


_HEADLINES = {
    "e2e_per_s": "executions/s, SQLite, 4 workers x MaxTaskCount 10 (median)",
    "e2e_postgresql_per_s": "the same on PostgreSQL",
    "e2e_backlog_per_s": "the same with TaskBacklog 10 (one run)",
    "e2e_vs_celery_db_best": "ours (SQLite) / Celery + db backend, its best configuration",
    "e2e_vs_procrastinate": "ours (PostgreSQL) / procrastinate, its best configuration",
    "e2e_vs_protocol_loop": "ours / raw pika doing our protocol, no catalog",
    "e2e_vs_raw_roundtrip": "ours / raw pika one-status round trip",
    "e2e_vs_celery": "ours / Celery, no backend (records nothing)",
    "e2e_vs_dramatiq": "ours / Dramatiq (records nothing)",
    "dispatch_p50_ms": "start_execution -> started, light load, SQLite",
    "dispatch_p99_ms": "start_execution -> started, light load, SQLite",
    "dispatch_saturated_p50_ms": "same, offered at 80 % of the measured max",
    "dispatch_saturated_p99_ms": "same, offered at 80 % of the measured max",
    "master_cpu_ms_per_exec": "master CPU per execution (SQLite headline)",
    "workers_cpu_ms_per_exec": "all workers' CPU per execution",
    "rabbitmq_cpu_ms_per_exec": "the RabbitMQ node's beam.smp CPU per execution",
    "commits_per_exec_postgresql": "catalog commits per execution (xact_commit)",
    "enqueue_per_s": "started executions/s from one client, run_many of 500, SQLite",
    "enqueue_single_per_s": "the same, one create_execution_with (+ start) per execution",
    "enqueue_ssis_per_s": "the same, SSIS's create_execution then start_execution",
    "history_latency_ratio": "p50 at large history / p50 at small (PostgreSQL)",
    "master_rss_mb": "master peak RSS during the large-history runs",
    "heartbeat_master_cpu_percent": "master CPU (% of one core) under the simulated heartbeats",
    "heartbeat_lag_p99_ms": "sent_at -> LastOnlineTime",
}


if __name__ == "__main__":
    sys.exit(main())
