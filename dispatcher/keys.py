"""The catalog key: sensitive values are encrypted at rest, as SSISDB encrypts them with
its database master key.

A sensitive value (an execution's parameter value, and every future sensitive value the
catalog stores) is sealed with AES-256-GCM, an authenticated cipher: a changed byte fails
to open instead of decrypting to garbage. The stored text names the key that sealed it::

    enc:v1:<key id>:<base64url(nonce || ciphertext and tag)>

The key id is the first 16 hex digits of the key's SHA-256, so a message can say which
key is missing without revealing it. Keys never enter the catalog: the master and the CLI
read them from ``catalog.key`` (``SCALEOUT_CATALOG__KEY``, one or more keys separated by
commas) or ``catalog.key_file`` (``SCALEOUT_CATALOG__KEY_FILE``, one key a line, ``#``
comments), else from the default file ``catalog init`` writes
(``$XDG_CONFIG_HOME/scaleout/catalog.key``, ``~/.config/scaleout/catalog.key``). The first
key seals; every key opens, so a rotation can keep an old key while it is retired. A
keyring read from a file reads it again when it meets a key id it does not hold, so a
running master picks up ``scaleout catalog rotate-key``'s new key without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dispatcher.errors import CatalogKeyMissing, ScaleoutError

PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
_AAD = b"scaleout-catalog-v1"
KEY_SETTINGS = "SCALEOUT_CATALOG__KEY_FILE (a key file) or SCALEOUT_CATALOG__KEY"


def default_key_file() -> Path:
    """Where ``catalog init`` writes a key when none is configured."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scaleout" / "catalog.key"


@dataclass(frozen=True, slots=True)
class CatalogKey:
    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str, source: str) -> CatalogKey:
        try:
            secret = base64.urlsafe_b64decode(text.strip().encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            msg = f"{source} holds a line that is not a catalog key (base64 of 32 bytes)"
            raise ScaleoutError(msg, hint="`scaleout catalog rotate-key` writes a valid key file")
        return cls(hashlib.sha256(secret).hexdigest()[:16], secret)


def new_key_text() -> str:
    """A fresh random key, as a key file's line holds it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def is_sealed(stored: str | None) -> bool:
    return stored is not None and stored.startswith(PREFIX)


def sealed_key_id(stored: str) -> str:
    return stored[len(PREFIX) :].split(":", 1)[0]


class Keyring:
    """The keys this process holds: the first seals, any opens."""

    def __init__(
        self,
        keys: Sequence[CatalogKey] = (),
        *,
        file: Path | None = None,
        source: str = "",
        optional: bool = False,
    ) -> None:
        self._keys = tuple(keys)
        self._file = file
        self._optional = optional
        """A missing ``file`` means no key yet (the default file, before `catalog init`)."""
        self._loaded = file is None
        self._lock = threading.Lock()
        self.source = source or (f"the key file {file}" if file else "the given keys")

    @classmethod
    def from_settings(cls, key: str | None, key_file: Path | None) -> Keyring:
        """The keyring the settings describe: ``key``, else ``key_file``, else the default
        file when it exists, else none (a catalog without sensitive values needs none)."""
        if key:
            source = "SCALEOUT_CATALOG__KEY"
            return cls([CatalogKey.parse(k, source) for k in key.split(",") if k.strip()],
                       source=source)  # fmt: skip
        if key_file is not None:
            return cls(file=key_file)
        default = default_key_file()
        # Read when needed, not now: a master started before `catalog init` wrote the
        # file still finds it.
        return cls(file=default, optional=True, source=f"the default key file {default}")

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring of one new key (tests, and a rotation's new key)."""
        return cls([CatalogKey.parse(new_key_text(), "a new key")], source="a new key")

    def _held(self, *, reload: bool = False) -> tuple[CatalogKey, ...]:
        if self._file is not None and self._optional and not self._file.exists():
            return ()
        if self._file is not None and (reload or not self._loaded):
            with self._lock:
                self._keys = read_key_file(self._file)
                self._loaded = True
        return self._keys

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self._held())

    def seal(self, plain: str, *, what: str) -> str:
        """``plain`` encrypted with the current key; refused when there is no key."""
        keys = self._held_or_refuse(what, "store")
        key = keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key.secret).encrypt(nonce, plain.encode("utf-8"), _AAD)
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}{key.key_id}:{body}"

    def can_open(self, stored: str) -> bool:
        key_id = sealed_key_id(stored)
        return self._key(key_id) is not None

    def open(self, stored: str, *, what: str) -> str:
        """The plain text of a sealed value; :class:`CatalogKeyMissing` names the key
        needed when this keyring does not hold it."""
        key_id, _, body = stored[len(PREFIX) :].partition(":")
        key = self._key(key_id)
        if key is None:
            held = ", ".join(self.key_ids) or "no key"
            msg = (
                f"cannot decrypt {what}: it is encrypted with catalog key {key_id}, and "
                f"{self.source} holds {held}"
            )
            raise CatalogKeyMissing(
                msg, hint=f"give the master and the CLI that key: {KEY_SETTINGS}"
            )
        raw = base64.urlsafe_b64decode(body.encode("ascii"))
        try:
            plain = AESGCM(key.secret).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _AAD)
        except InvalidTag:
            msg = f"{what} failed its integrity check under catalog key {key_id}"
            raise CatalogKeyMissing(
                msg, hint="the stored value was changed outside scaleout"
            ) from None
        return plain.decode("utf-8")

    def _key(self, key_id: str) -> CatalogKey | None:
        found = next((k for k in self._held() if k.key_id == key_id), None)
        if found is None and self._file is not None and self._file.exists():
            found = next((k for k in self._held(reload=True) if k.key_id == key_id), None)
        return found

    def _held_or_refuse(self, what: str, action: str) -> tuple[CatalogKey, ...]:
        missing = self._file is not None and not self._file.exists()
        keys = () if missing else self._held()
        if not keys:
            lacks = "does not exist" if missing else "has no catalog key"
            msg = (
                f"cannot {action} {what}: sensitive values are encrypted, and {self.source} {lacks}"
            )
            hint = (
                f"run `scaleout catalog init` (it writes {default_key_file()}) or set "
                f"{KEY_SETTINGS}"
            )
            raise CatalogKeyMissing(msg, hint=hint)
        return keys


def read_key_file(path: Path) -> tuple[CatalogKey, ...]:
    """The keys of a key file, the current one first; blank lines and ``#`` comments skip."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"the catalog key file {path} does not exist"
        raise CatalogKeyMissing(
            msg, hint=f"restore it, or point {KEY_SETTINGS} at the key"
        ) from None
    except OSError as exc:
        msg = f"cannot read the catalog key file {path}: {exc.strerror}"
        raise CatalogKeyMissing(msg, hint="the master's user must be able to read it") from None
    source = f"the key file {path}"
    lines = [line.strip() for line in text.splitlines()]
    return tuple(
        CatalogKey.parse(line, source) for line in lines if line and not line.startswith("#")
    )


KEY_FILE_HEADER = (
    "# scaleout catalog key (AES-256-GCM). Keep it secret and backed up: without it the\n"
    "# catalog's sensitive values cannot be read. The first key encrypts; all decrypt.\n"
)


def write_key_file(path: Path, keys: Sequence[str], *, exclusive: bool) -> None:
    """Write ``keys`` (texts, the current first) to ``path``, readable by its owner only.
    ``exclusive``: refuse (FileExistsError) when the file exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(KEY_FILE_HEADER + "".join(f"{k}\n" for k in keys))
        handle.flush()
        os.fsync(handle.fileno())


def ensure_default_key() -> Path | None:
    """Write a new key to the default key file unless it exists; the path when written."""
    path = default_key_file()
    try:
        write_key_file(path, [new_key_text()], exclusive=True)
    except FileExistsError:
        return None
    return path
