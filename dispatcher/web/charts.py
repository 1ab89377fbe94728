"""The console's pictures as server-rendered SVG: no chart script, nothing inline for the
CSP to allow, and a test can read the bars. Pure functions of the catalog's rows.

- :func:`executions_per_minute`: stacked bars, one per minute, by final status;
- :func:`dispatch_latency`: one dot per first attempt (start request -> worker's start);
- :func:`attempts_timeline`: one lane per worker, one bar per attempt, retries marked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from dispatcher.catalog.console import AttemptSpan, Ended, Latency
from schemas.states import ExecutionStatus

WIDTH, HEIGHT = 900, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
COLOURS = {
    ExecutionStatus.SUCCEEDED: "#2e7d32",
    ExecutionStatus.FAILED: "#c62828",
    ExecutionStatus.ENDED_UNEXPECTEDLY: "#ef6c00",
    ExecutionStatus.CANCELED: "#757575",
    ExecutionStatus.COMPLETED: "#1565c0",
}
OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "canceled": "#757575",
    "withdrawn": "#9e9e9e",
    "expired": "#ef6c00",
    None: "#1e88e5",
}
"""An attempt still running has no outcome: blue."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        share = (moment - self.start).total_seconds() / self.seconds
        return LEFT + min(max(share, 0.0), 1.0) * (WIDTH - LEFT - RIGHT)


def _svg(label: str, body: list[str], height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _time_axis(window: Window, height: int) -> list[str]:
    base = height - BOTTOM
    parts = [f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>']
    for i in range(5):
        moment = window.start + timedelta(seconds=window.seconds * i / 4)
        x = window.x(moment)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{base + 18}" text-anchor="{anchor}">'
            f"{moment:%H:%M}</text>"
        )
    return parts


def _value_axis(top: float, unit: str) -> list[str]:
    base = HEIGHT - BOTTOM
    return [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end">{top:g}{unit}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{base}" text-anchor="end">0</text>',
    ]


def _empty(label: str, what: str) -> str:
    x, y = WIDTH / 2, HEIGHT / 2
    return _svg(label, [f'<text class="empty" x="{x}" y="{y}" text-anchor="middle">{what}</text>'])


def executions_per_minute(ended: Sequence[Ended], window: Window) -> str:
    label = "Executions per minute by final status"
    minutes = max(int(window.seconds // 60), 1)
    counts: Counter[tuple[int, ExecutionStatus]] = Counter()
    for row in ended:
        index = int((row.end_time - window.start).total_seconds() // 60)
        if 0 <= index < minutes:
            counts[(index, row.status)] += 1
    if not counts:
        return _empty(label, "no execution ended in this window")
    totals = Counter[int]()
    for (index, _status), n in counts.items():
        totals[index] += n
    peak = max(totals.values())
    plot_h = HEIGHT - TOP - BOTTOM
    bar_w = (WIDTH - LEFT - RIGHT) / minutes
    body = _value_axis(peak, "/min") + _time_axis(window, HEIGHT)
    for index in sorted(totals):
        y = float(HEIGHT - BOTTOM)
        for status, colour in COLOURS.items():
            n = counts.get((index, status), 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            minute = window.start + timedelta(minutes=index)
            body.append(
                f'<rect class="bar" data-status="{status.key}" data-count="{n}" '
                f'x="{LEFT + index * bar_w:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{minute:%H:%M} '
                f"{n} {status.label}</title></rect>"
            )
    return _svg(label, body)


def dispatch_latency(points: Sequence[Latency], window: Window) -> str:
    label = "Dispatch latency: start request to the worker's start (first attempts)"
    shown = [p for p in points if window.start <= p.started_at <= window.end]
    if not shown:
        return _empty(label, "no execution started in this window")
    peak = max(*(p.seconds for p in shown), 0.001)
    plot_h = HEIGHT - TOP - BOTTOM
    body = _value_axis(round(peak, 3), " s") + _time_axis(window, HEIGHT)
    for p in shown:
        y = HEIGHT - BOTTOM - plot_h * p.seconds / peak
        body.append(
            f'<circle class="dot" cx="{window.x(p.started_at):.1f}" cy="{y:.1f}" r="3" '
            f'fill="#1565c0"><title>execution {p.execution_id}: {p.seconds:.3f} s</title></circle>'
        )
    return _svg(label, body)


def attempts_timeline(spans: Sequence[AttemptSpan], window: Window) -> str:
    label = "Attempts per worker"
    workers = sorted({s.worker_agent_id for s in spans})
    if not workers:
        return _empty(label, "no attempt in this window")
    lane = 26
    height = TOP + BOTTOM + lane * len(workers)
    body = _time_axis(window, height)
    for row, worker in enumerate(workers):
        y = TOP + row * lane
        body.append(
            f'<text class="lane" x="{LEFT - 6}" y="{y + 16}" text-anchor="end">'
            f"{escape(worker)}</text>"
        )
        for span in (s for s in spans if s.worker_agent_id == worker):
            body.append(_span(span, window, y))
    return _svg(label, body, height)


def _span(span: AttemptSpan, window: Window, y: int) -> str:
    begin = window.x(span.started_at or span.dispatched_at)
    end = window.x(span.ended_at or window.end)
    outcome = span.outcome if span.outcome in OUTCOME_COLOURS else None
    state = span.outcome or "running"
    retry = " retry" if span.attempt > 1 else ""
    return (
        f'<rect class="span{retry}" data-execution="{span.execution_id}" '
        f'data-attempt="{span.attempt}" x="{begin:.1f}" y="{y + 3}" '
        f'width="{max(end - begin, 2):.1f}" height="18" fill="{OUTCOME_COLOURS[outcome]}">'
        f"<title>execution {span.execution_id} attempt {span.attempt}: {escape(state)}</title>"
        "</rect>"
    )
