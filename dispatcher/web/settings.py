"""The console's settings: where it listens, who may sign in, how sessions last.

Loaded once at the edge (``scaleout web``): flags, then ``SCALEOUT_WEB_*`` variables,
then defaults. The catalog and broker come from the master's settings, as for every
other command.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SignIn = Literal["auto", "required", "off"]


def default_users_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scaleout" / "web-users.toml"


class WebSettings(BaseSettings):
    """``scaleout web``'s settings (SSIS has none: Scale Out Manager is a desktop tool)."""

    model_config = SettingsConfigDict(env_prefix="SCALEOUT_WEB_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    users_file: Path = Field(default_factory=default_users_file)
    sign_in: SignIn = "auto"
    """auto: required unless bound to loopback with no users file; off: loopback only."""
    secret_key: str = ""
    """Signs the session cookie; '' draws a random one at start (sessions end on restart)."""
    session_max_age_s: int = Field(8 * 3600, ge=60)
    https_only: bool = False
    """Mark the cookie Secure: set it when a TLS proxy fronts the console."""
    allowed_hosts: tuple[str, ...] = ()
    """Host headers served; empty: the bound host and the loopback names (which stops
    DNS rebinding against a loopback console)."""
    poll_ms: int = Field(2000, ge=200)
    """How often pages refresh their live parts."""

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def sign_in_required(self) -> bool:
        if self.sign_in == "required" or not self.loopback:
            return True
        if self.sign_in == "off":
            return False
        return self.users_file.exists()

    def hosts(self) -> list[str]:
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        names = {"127.0.0.1", "localhost", "::1", "[::1]", self.host}
        return sorted(names - {"0.0.0.0", "::"}) if self.loopback else ["*"]  # noqa: S104


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
