"""Settings: precedence, SSIS names in TOML, TimeSpan values, broker URL rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatcher.settings import (
    BrokerSettings,
    MasterSettings,
    SettingsError,
    parse_timespan,
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
