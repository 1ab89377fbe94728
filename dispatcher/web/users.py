"""The console's users file: names, roles and argon2 password hashes, in TOML.

::

    # scaleout web users; manage with `scaleout web users add NAME --role admin`
    [users.ann]
    role = "admin"
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."

Roles mirror SSISDB's: ``viewer`` reads everything the console shows; ``admin``
(``ssis_admin``) also changes workers and starts and stops executions. The file holds
hashes only, never a password; it is written with mode 0600.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dispatcher.errors import ScaleoutError

Role = Literal["viewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "admin")
SSIS_ROLES = {"viewer": "public (read)", "admin": "ssis_admin"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password of anyone")
"""Verified against when the name is unknown, so a wrong name costs what a wrong password does."""


class UsersFileError(ScaleoutError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not NAME.match(name):
        msg = f"{name!r} is not a user name"
        raise UsersFileError(msg, hint="letters, digits, '.', '_', '@', '-'; at most 64")
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UsersFileError(f"unknown role {role!r}", hint="use viewer or admin (ssis_admin)")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        msg = f"the password is shorter than {MIN_PASSWORD} characters"
        raise UsersFileError(msg, hint="choose a longer one")
    return _HASHER.hash(password)


def load(path: Path) -> dict[str, User]:
    """The users in ``path``; {} when it does not exist. A bad file raises, naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsersFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"{path} is not valid TOML: {exc}") from None
    users: dict[str, User] = {}
    for name, entry in (data.get("users") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password_hash"), str):
            raise UsersFileError(f"{path}: user {name!r} has no password_hash")
        users[name] = User(
            check_name(name), check_role(str(entry.get("role", ""))), entry["password_hash"]
        )
    return users


def save(path: Path, users: dict[str, User]) -> None:
    """Write the file whole (a temporary file, then a rename), readable by its owner only."""
    lines = ["# scaleout web users; manage with `scaleout web users add NAME --role admin`"]
    for user in sorted(users.values(), key=lambda u: u.name):
        lines += ["", f'[users."{user.name}"]', f'role = "{user.role}"']
        lines.append(f'password_hash = "{user.password_hash}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    temporary.replace(path)


def add(path: Path, name: str, role: str, password: str, *, replace: bool = False) -> User:
    users = load(path)
    check_name(name)
    if name in users and not replace:
        msg = f"user {name!r} already exists in {path}"
        raise UsersFileError(msg, hint="add --replace to set a new password or role")
    user = User(name, check_role(role), hash_password(password))
    users[name] = user
    save(path, users)
    return user


def remove(path: Path, name: str) -> None:
    users = load(path)
    if name not in users:
        raise UsersFileError(f"user {name!r} is not in {path}")
    del users[name]
    save(path, users)


def verify(users: dict[str, User], name: str, password: str) -> User | None:
    """The user when the password matches its hash; None otherwise (same cost either way)."""
    user = users.get(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


class UsersFile:
    """The users file, read again when it changes (a user added while the console runs
    can sign in at once; one removed is signed out at their next request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._users = load(self.path) if stamp else {}
            self._stamp = stamp
        return self._users
