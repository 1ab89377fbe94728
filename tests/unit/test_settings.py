"""Settings: precedence, SSIS names in TOML, TimeSpan values, broker URL rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.worker.settings import WorkerSettings
from dispatcher.settings import (
    BrokerSettings,
    MasterSettings,
    SettingsError,
    parse_timespan,
    resolve_identity,
    settings_table,
)


def test_defaults_are_ssis_defaults() -> None:
    """Without a file or environment, the master uses SSIS's documented defaults."""
    settings = MasterSettings.load()

    assert settings.master_heartbeat_interval_ms == 30000
    assert settings.deal_with_expired_tasks_interval_ms == 300000
    assert settings.cleanup_completed_jobs_interval_ms == 43200000
    assert settings.catalog.url == "sqlite:///ssisdb.sqlite3"


def test_toml_takes_ssis_names_and_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TOML file may use SSIS names; the environment overrides it; flags override both."""
    path = tmp_path / "master.toml"
    path.write_text(
        "[master]\nMasterHeartbeatIntervalInMs = 500\nDealWithExpiredTasksIntervalInMs = 700\n"
    )
    monkeypatch.setenv("SCALEOUT_DEAL_WITH_EXPIRED_TASKS_INTERVAL_MS", "900")

    settings = MasterSettings.load(path, metrics_port=0)

    assert settings.master_heartbeat_interval_ms == 500
    assert settings.deal_with_expired_tasks_interval_ms == 900
    assert settings.metrics_port == 0


def test_missing_or_broken_file_says_so(tmp_path: Path) -> None:
    """A settings file that is missing or not TOML is a clear error naming the file."""
    with pytest.raises(SettingsError, match="does not exist"):
        MasterSettings.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        MasterSettings.load(bad)


def test_timespan_parsing() -> None:
    """SSIS's TimeSpan text converts to seconds."""
    assert parse_timespan("00:01:00") == 60
    assert parse_timespan("7.00:00:00") == 7 * 86400
    assert parse_timespan("00:00:10.5") == 10.5
    assert parse_timespan(12) == 12


def test_broker_url_scheme_and_redaction() -> None:
    """Only AMQP URLs are accepted, and the password never shows in the redacted form."""
    with pytest.raises(ValidationError):
        BrokerSettings(url="http://example")
    broker = BrokerSettings(url="amqps://user:s3cret@rabbit.example:5671/prod")

    assert broker.uses_tls
    assert not broker.is_loopback
    assert "s3cret" not in broker.redacted_url


def test_settings_table_names_every_setting() -> None:
    """The README's settings table lists every field with its environment variable."""
    rows = settings_table(MasterSettings)
    names = {row[1] for row in rows}

    assert "master_heartbeat_interval_ms" in names
    assert "broker.url" in names
    assert ("MasterHeartbeatIntervalInMs", "master_heartbeat_interval_ms") in {
        (r[0], r[1]) for r in rows
    }


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scaleout.toml"


def test_the_example_file_loads_for_the_master_and_the_worker() -> None:
    """examples/scaleout.toml, in SSIS's names, sets what its comments say."""
    master = MasterSettings.load(EXAMPLE)
    worker = WorkerSettings.load(EXAMPLE)

    assert master.catalog.url == "sqlite:///ssisdb.sqlite3"
    assert master.catalog.connection_timeout_s == 15
    assert master.completed_jobs_retention_min == 60
    assert master.broker.cert_file == Path("/etc/scaleout/pki/scaleout-master.pem")
    assert worker.worker_id == "w1"
    assert worker.agent_heartbeat_interval_s == 60
    assert worker.heartbeat_error_tolerance_s == 600
    assert worker.tasks_root_folder == Path("/var/lib/scaleout/tasks")
    assert worker.broker.cert_file == Path("/etc/scaleout/pki/w1.pem")


def test_nested_settings_take_their_ssis_names(tmp_path: Path) -> None:
    """SqlServerName is catalog.url; a [master.catalog] table beside it merges."""
    path = tmp_path / "s.toml"
    path.write_text(
        '[master]\nSqlServerName = "sqlite:///x.sqlite3"\n'
        "[master.catalog]\nconnection_timeout_s = 4\n"
    )

    settings = MasterSettings.load(path)

    assert (settings.catalog.url, settings.catalog.connection_timeout_s) == (
        "sqlite:///x.sqlite3",
        4,
    )


def test_an_unknown_key_names_the_file_and_suggests_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[worker]\nAgentId = 'w1'\nMaxTaskCont = 4\n")

    with pytest.raises(SettingsError) as caught:
        WorkerSettings.load(path)

    assert str(caught.value) == (
        f"unknown setting 'MaxTaskCont' in [worker] of {path}; did you mean MaxTaskCount?"
    )


def test_auto_identity_follows_the_broker_url() -> None:
    """The master trusts report bodies only on plain amqp:// (loopback only, one shared
    dev user); on amqps:// the AMQP user_id names the sender. An explicit value wins."""
    plain = BrokerSettings()
    tls = BrokerSettings(url="amqps://mq.example/scaleout")

    assert MasterSettings.load().sender_identity == "auto"
    assert resolve_identity("auto", plain) == "shared_user"
    assert resolve_identity("auto", tls) == "user_id"
    assert resolve_identity("user_id", plain) == "user_id"


def test_a_list_setting_in_the_environment_that_is_not_json_says_how_to_write_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a pydantic-settings traceback: our SettingsError, with an example."""
    monkeypatch.setenv("SCALEOUT_BROKER__FAILOVER_URLS", "amqps://node2:5671/")
    with pytest.raises(SettingsError, match=r'must be JSON, e\.g\. \'\["amqps://node2'):
        MasterSettings.load()


def test_failover_urls_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_BROKER__URL", "amqps://node1:5671/%2F")
    monkeypatch.setenv("SCALEOUT_BROKER__FAILOVER_URLS", '["amqps://node2:5671/%2F"]')
    broker = MasterSettings.load().broker
    assert [node.url for node in broker.nodes()] == [
        "amqps://node1:5671/%2F",
        "amqps://node2:5671/%2F",
    ]


def test_failover_urls_must_share_the_scheme_of_url() -> None:
    with pytest.raises(ValueError, match="every broker node needs the scheme of url"):
        BrokerSettings(url="amqps://node1:5671/", failover_urls=("amqp://node2:5672/",))
