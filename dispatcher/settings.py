"""Settings, loaded once at the edge (the CLI) and passed down as frozen objects.

Precedence, highest first: explicit overrides (CLI flags), ``SCALEOUT_*`` environment
variables (nested with ``__``, e.g. ``SCALEOUT_BROKER__URL``), a TOML file, defaults.
A TOML file may use SSIS's setting names (``MasterHeartbeatIntervalInMs = 30000``,
``AgentHeartbeatInterval = "00:01:00"``) or ours; each field records its SSIS name in
``json_schema_extra["ssis"]`` and :func:`settings_table` renders the documentation table.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import pydantic_settings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "SCALEOUT_"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


def parse_timespan(value: object) -> object:
    """Accept .NET TimeSpan text (``d.hh:mm:ss``), as SSIS's config files write it."""
    if isinstance(value, str) and (match := _TIMESPAN.match(value.strip())):
        days = int(match["d"] or 0)
        return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
    return value


def ssis(name: str, description: str) -> dict[str, Any]:
    """Field metadata: the SSIS setting name and a one-line description."""
    return {"json_schema_extra": {"ssis": name}, "description": description}


SenderIdentity = Literal["user_id", "shared_user"]
"""How the master knows who sent a report: ``user_id``, the AMQP user RabbitMQ checked
(one broker user per worker), or ``shared_user``, the body's word (a loopback dev broker)."""

IdentitySetting = Literal["auto", "user_id", "shared_user"]
"""``auto`` decides from the broker URL, as the worker does: plain ``amqp://`` (allowed on
loopback only, where everyone logs in as one dev user such as guest) means shared_user;
``amqps://`` (one certificate, so one RabbitMQ user, per worker) means user_id."""


class BrokerSettings(BaseModel):
    """How to reach RabbitMQ. TLS (``amqps://``) verifies the server's certificate and host
    name; with a client certificate and no password in the URL, login is EXTERNAL (the
    certificate's CN is the RabbitMQ user)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        description="amqp:// (loopback only) or amqps:// broker URL",
    )
    failover_urls: tuple[str, ...] = Field(
        (),
        description=(
            "the other nodes of the broker's cluster, tried in order after url on every "
            "(re)connect: same scheme, user and vhost"
        ),
    )
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's cert")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client certificate's private key")
    server_hostname: str | None = Field(
        None, description="name to verify in the broker's certificate (default: URL host)"
    )
    heartbeat_s: int = Field(30, ge=0, description="AMQP heartbeat; dead peers found in ~2x")
    confirm_timeout_s: float = Field(30.0, gt=0, description="wait for a publish confirm")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + TLS + AMQP handshake")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in {"amqp", "amqps"}:
            msg = f"broker URL must start with amqp:// or amqps://, got {scheme or 'none'}://"
            raise ValueError(msg)
        return url

    @field_validator("failover_urls")
    @classmethod
    def _same_scheme(cls, urls: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        main = urlsplit(str(info.data.get("url", ""))).scheme
        for url in urls:
            cls._known_scheme(url)
            if urlsplit(url).scheme != main:
                msg = f"every broker node needs the scheme of url ({main}://): {url!r}"
                raise ValueError(msg)
        return urls

    def nodes(self) -> list[BrokerSettings]:
        """These settings once per cluster node, ``url`` first."""
        return [self, *(self.model_copy(update={"url": u}) for u in self.failover_urls)]

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "amqps"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def redacted_url(self) -> str:
        """The URL without its password, for logs."""
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        if parts.username:
            netloc = f"{parts.username}:***@{netloc}"
        return parts._replace(netloc=netloc).geturl()


def resolve_identity(setting: IdentitySetting, broker: BrokerSettings) -> SenderIdentity:
    """The identity mode ``setting`` means on ``broker``."""
    if setting != "auto":
        return setting
    return "user_id" if broker.uses_tls else "shared_user"


class CatalogSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(
        "sqlite:///ssisdb.sqlite3",
        description="SQLAlchemy URL of the SSISDB catalog (sqlite, postgresql, mssql+pyodbc)",
        json_schema_extra={"ssis": "SqlServerName"},
    )
    connection_timeout_s: int = Field(
        15, ge=1, **ssis("SqlConnectionTimeoutInSecs", "timeout to connect to the catalog")
    )
    # SSISDB encrypts sensitive values with its database master key (catalog property
    # ENCRYPTION_ALGORITHM, AES_256 by default); ours is AES-256-GCM with a key kept out of
    # the catalog: here, in a file, or (neither set) the file `catalog init` writes.
    key: SecretStr | None = Field(
        None,
        **ssis(
            "database master key",
            "catalog key(s) for sensitive values, base64; several: comma-separated, first "
            "encrypts (prefer key_file)",
        ),
    )
    key_file: Path | None = Field(
        None,
        description=(
            "file of catalog keys, one a line, the first encrypts; `catalog init` writes it "
            "when missing; unset: $XDG_CONFIG_HOME/scaleout/catalog.key (~/.config/...)"
        ),
    )

    @property
    def redacted_url(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        return self.url.replace(f":{parts.password}@", ":***@", 1)


_TOML_DATA: ContextVar[dict[str, Any]] = ContextVar("scaleout_toml", default={})  # noqa: B039


class _TomlData(PydanticBaseSettingsSource):
    """The TOML file's values, placed below the environment in precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _TOML_DATA.get()


class ScaleoutSettings(BaseSettings):
    """Base of the master's and the worker's settings: env prefix, TOML loading."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid"
    )
    toml_section: ClassVar[str] = ""
    toml_aliases: ClassVar[dict[str, str]] = {}
    """Other keys a file may use for a setting (e.g. a spelling from SSIS's docs)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlData(settings_cls))

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Self:
        """Settings from overrides, the environment and an optional TOML file."""
        data = cls._read_toml(path) if path is not None else {}
        token = _TOML_DATA.set(data)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except pydantic_settings.SettingsError as exc:
            # An environment variable of a list setting that is not JSON, e.g.
            # SCALEOUT_BROKER__FAILOVER_URLS='amqps://a' instead of '["amqps://a"]'.
            msg = (
                f"{exc}: a list setting in the environment must be JSON, e.g. "
                '\'["amqps://node2:5671/%2F", "amqps://node3:5671/%2F"]\''
            )
            raise SettingsError(msg) from None
        finally:
            _TOML_DATA.reset(token)

    @classmethod
    def _read_toml(cls, path: Path) -> dict[str, Any]:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            msg = f"settings file {path} does not exist"
            raise SettingsError(msg) from None
        except tomllib.TOMLDecodeError as exc:
            msg = f"settings file {path} is not valid TOML: {exc}"
            raise SettingsError(msg) from None
        if cls.toml_section and isinstance(raw.get(cls.toml_section), dict):
            raw = raw[cls.toml_section]
        data = cls._by_our_names(raw)
        cls._refuse_unknown(path, data)
        return data

    @classmethod
    def _refuse_unknown(cls, path: Path, data: dict[str, Any]) -> None:
        """A misspelt key would otherwise surface as pydantic's "extra inputs": name the
        file and the key, and suggest the setting that was probably meant."""
        known = set(cls.model_fields) | {ssis for _, ssis in cls.ssis_paths()}
        other_sections = {"master", "worker"} - {cls.toml_section}
        for key in data:
            if key in cls.model_fields or key in other_sections:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            section = f"[{cls.toml_section}] of " if cls.toml_section else ""
            msg = f"unknown setting {key!r} in {section}{path}{hint}"
            raise SettingsError(msg)

    @classmethod
    def _by_our_names(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A file may use SSIS's names (``SqlServerName = "..."``) as the product's config
        files do; those of nested settings land in their table (``catalog.url``)."""
        paths = {ssis_name: path for path, ssis_name in cls.ssis_paths()}
        paths.update({alias: (name,) for alias, name in cls.toml_aliases.items()})
        data: dict[str, Any] = {}
        for key, value in raw.items():
            *parents, leaf = paths.get(key, (key,))
            target = data
            for parent in parents:
                target = target.setdefault(parent, {})
            if leaf in target and isinstance(target[leaf], dict) and isinstance(value, dict):
                target[leaf] = {**target[leaf], **value}
            else:
                target[leaf] = value
        return data

    @classmethod
    def ssis_paths(cls) -> Iterator[tuple[tuple[str, ...], str]]:
        """(field path, SSIS name) of every setting that has an SSIS name, nested included."""
        for name, ssis_name, info in cls.describe():
            if ssis_name:
                yield (name,), ssis_name
            model = info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                for sub, sub_info in model.model_fields.items():
                    extra = sub_info.json_schema_extra
                    sub_ssis = str(extra.get("ssis", "")) if isinstance(extra, dict) else ""
                    if sub_ssis:
                        yield (name, sub), sub_ssis

    @classmethod
    def describe(cls) -> Iterator[tuple[str, str, FieldInfo]]:
        """(field name, SSIS name or '', field) for every setting."""
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            yield name, str(extra.get("ssis", "")), info


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message says what to fix."""


class MasterSettings(ScaleoutSettings):
    """The Scale Out Master (``scaleout master``); SSIS's MasterSettings.config."""

    toml_section: ClassVar[str] = "master"

    broker: BrokerSettings = BrokerSettings()
    catalog: CatalogSettings = CatalogSettings()
    master_heartbeat_interval_ms: int = Field(
        30000, gt=0, **ssis("MasterHeartbeatIntervalInMs", "write LAST_ONLINE_TIME")
    )
    deal_with_expired_tasks_interval_ms: int = Field(
        300000, gt=0, **ssis("DealWithExpiredTasksIntervalInMs", "requeue or end expired tasks")
    )
    cleanup_completed_jobs_interval_ms: int = Field(
        43200000,
        gt=0,
        **ssis("CleanupCompletedJobsIntervalInMs", "move finished tasks to history"),
    )
    completed_jobs_retention_min: int = Field(
        60, ge=0, **ssis("@minutesToKeep", "how long finished tasks stay before cleanup")
    )
    initial_lease_s: float = Field(
        300.0, gt=0, description="lease of a dispatched attempt until the worker's first renewal"
    )
    worker_offline_after_s: float = Field(
        180.0, gt=0, description="a worker with no heartbeat for this long is offline"
    )
    expiry_grace_s: float = Field(
        60.0,
        ge=0,
        description=(
            "leases are judged only after the master has heard heartbeats this long "
            "(after its start or a broker outage); about one LeaseInterval"
        ),
    )
    dispatch_poll_interval_ms: int = Field(
        1000, gt=0, description="safety-net poll for pending tasks written by plain SQL"
    )
    dispatch_batch_size: int = Field(100, gt=0, description="tasks claimed per dispatch pass")
    republish_after_s: float = Field(
        10.0, gt=0, description="republish a dispatched attempt whose publish was unconfirmed"
    )
    status_batch_max: int = Field(200, gt=0, description="status reports applied per commit")
    sender_identity: IdentitySetting = Field(
        "auto",
        description=(
            "user_id: a report's sender is its AMQP user_id (one RabbitMQ user per worker). "
            "shared_user: trust the body's worker_id; only for a loopback dev broker. "
            "auto: shared_user on plain amqp:// (loopback only), user_id on amqps://."
        ),
    )
    metrics_port: int = Field(
        9540,
        ge=0,
        description=(
            "Prometheus /metrics port; 0 = off. Taken by another process (a second master on "
            "this host): the next free one of the following 9, logged and shown by "
            "`scaleout masters list`"
        ),
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics server binds")
    log_folder: Path | None = Field(None, description="also write JSON logs here")
    master_id: str = Field(
        "auto",
        min_length=1,
        max_length=128,
        description=(
            "this master's name among several on one catalog; auto: <host>:<metrics port> "
            "(<host>:<pid> with metrics off). Two masters must never share one"
        ),
    )
    leader_lease_s: float = Field(
        15.0,
        gt=0,
        description=(
            "the leader lease (database clock), renewed every third of it; a standby takes "
            "over once it lapses"
        ),
    )


def settings_table(cls: type[ScaleoutSettings]) -> list[tuple[str, str, str, str]]:
    """(SSIS name, our name, environment variable, default) rows for the README."""
    rows = []
    for name, ssis_name, info in cls.describe():
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            for sub, sub_info in type(default).model_fields.items():
                extra = sub_info.json_schema_extra
                sub_ssis = str(extra.get("ssis", "")) if isinstance(extra, dict) else ""
                env = f"{ENV_PREFIX}{name}__{sub}".upper()
                rows.append((sub_ssis, f"{name}.{sub}", env, repr(getattr(default, sub))))
            continue
        shown = "(required)" if info.is_required() else repr(default)
        rows.append((ssis_name, name, f"{ENV_PREFIX}{name}".upper(), shown))
    return rows
