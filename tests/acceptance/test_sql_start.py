"""An execution created and started by plain SQL (`SELECT catalog.start_execution(...)`,
as pg_cron or a SQL client would) on a PostgreSQL catalog, which a live master dispatches
and a live worker runs to success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.acceptance.conftest import EXAMPLE, Cli, closed_port, running_cluster
from tests.fixtures.catalog import pg_catalog_url, pg_template
from tests.fixtures.polling import wait_for

__all__ = ["pg_catalog_url", "pg_template"]


def test_select_start_execution_ends_succeeded(
    tmp_path: Path, pg_catalog_url: str, plain_broker: str
) -> None:
    cli = Cli(
        tmp_path,
        {
            "SCALEOUT_CATALOG__URL": pg_catalog_url,
            "SCALEOUT_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        },
    )
    cli.ok("catalog", "init")
    cli.ok("deploy", str(EXAMPLE), "--folder", "F")
    with running_cluster(cli, tmp_path, plain_broker) as cluster:
        url = pg_catalog_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as sql:
            execution_id = one(
                sql, "SELECT catalog.create_execution('F', 'SalesETL', 'Sleep', NULL)"
            )
            sql.execute(
                "SELECT catalog.set_execution_parameter_value(%s, 30::smallint, 'Seconds', '0.2')",
                (execution_id,),
            )
            sql.execute("SELECT catalog.start_execution(%s)", (execution_id,))

            def ended() -> str | None:
                status = one(
                    sql,
                    f"SELECT status FROM catalog.executions WHERE execution_id = {execution_id}",
                )
                return {7: "succeeded", 4: "failed", 6: "ended unexpectedly", 3: "canceled"}.get(
                    status
                )

            outcome = wait_for(ended, 60, f"execution {execution_id} to end")

        shown = cli.ok("executions", "show", str(execution_id), "--json").json()
        logs = cli.ok("executions", "logs", str(execution_id))

    assert outcome == "succeeded"
    assert shown["worker_agent_id"] == cluster.worker_id
    assert shown["caller_name"] == "postgres"
    assert "slept" in logs.stdout


def one(sql: psycopg.Connection[Any], statement: str) -> Any:
    row = sql.execute(statement).fetchone()
    assert row is not None
    return row[0]
