"""`scaleout masters ...`: the master instances on this catalog and which one leads."""

from __future__ import annotations

import typer

from dispatcher.cli import render
from dispatcher.cli.common import JsonFlag, emit, say, session

masters_app = typer.Typer(help="The master instances and the leader lease.", no_args_is_help=True)


@masters_app.command("list")
def masters_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every master on this catalog: leader or standby, epoch, online, last seen."""
    with session(ctx) as so:
        rows = so.masters()
        lease = so.leader_lease()
    emit(rows, as_json, render.masters_table(rows))
    if as_json:
        return
    if lease.holder is None or lease.lapsed:
        say(
            "no master holds the leader lease: nothing is dispatched or reconciled; start "
            "`scaleout master` (a standby takes over by itself once the lease lapses)",
            "yellow",
        )
