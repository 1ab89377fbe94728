"""The catalog keyring: sealing and opening, key ids, key files, rotation's reread, and
the refusals that say what is missing (never the value)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dispatcher.errors import CatalogKeyMissing, ScaleoutError
from dispatcher.keys import (
    PREFIX,
    CatalogKey,
    Keyring,
    default_key_file,
    ensure_default_key,
    is_sealed,
    new_key_text,
    read_key_file,
    sealed_key_id,
    write_key_file,
)


def test_sealed_text_names_its_key_and_opens_to_the_plain_text() -> None:
    keys = Keyring.generate()

    sealed = keys.seal('"hunter2"', what="a value")

    assert sealed.startswith(PREFIX)
    assert is_sealed(sealed)
    assert not is_sealed('"hunter2"')
    assert "hunter2" not in sealed
    assert sealed_key_id(sealed) == keys.key_ids[0]
    assert keys.open(sealed, what="a value") == '"hunter2"'
    assert keys.seal('"hunter2"', what="a value") != sealed  # a fresh nonce each time


def test_another_key_cannot_open_and_says_which_key_is_needed() -> None:
    sealed = Keyring.generate().seal("x", what="v")
    other = Keyring.generate()

    with pytest.raises(CatalogKeyMissing) as info:
        other.open(sealed, what="execution 5's sensitive parameter Token")

    said = str(info.value)
    assert "execution 5's sensitive parameter Token" in said
    assert f"catalog key {sealed_key_id(sealed)}" in said
    assert other.key_ids[0] in said
    assert "SCALEOUT_CATALOG__KEY_FILE" in info.value.hint
    assert not other.can_open(sealed)


def test_a_changed_byte_fails_the_integrity_check() -> None:
    keys = Keyring.generate()
    sealed = keys.seal("value", what="v")
    key_id, body = sealed[len(PREFIX) :].split(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 0x01  # one bit of the tag
    changed = f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"

    with pytest.raises(CatalogKeyMissing, match="failed its integrity check"):
        keys.open(changed, what="v")


def test_no_key_refuses_to_seal_with_what_to_do() -> None:
    with pytest.raises(CatalogKeyMissing) as info:
        Keyring(source="this process").seal("x", what="sensitive parameter ApiKey")

    assert "cannot store sensitive parameter ApiKey" in str(info.value)
    assert "scaleout catalog init" in info.value.hint


def test_every_key_opens_and_the_first_seals(tmp_path: Path) -> None:
    old, new = new_key_text(), new_key_text()
    sealed_old = Keyring([CatalogKey.parse(old, "t")]).seal("a", what="v")
    path = tmp_path / "catalog.key"
    write_key_file(path, [new, old], exclusive=True)

    keys = Keyring(file=path)

    assert keys.open(sealed_old, what="v") == "a"
    assert sealed_key_id(keys.seal("b", what="v")) == CatalogKey.parse(new, "t").key_id
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(path, [new], exclusive=True)


def test_a_file_keyring_rereads_the_file_for_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "catalog.key"
    write_key_file(path, [new_key_text()], exclusive=True)
    keys = Keyring(file=path)
    assert keys.key_ids  # loaded once
    rotated = new_key_text()
    sealed = Keyring([CatalogKey.parse(rotated, "t")]).seal("after", what="v")
    write_key_file(path, [rotated], exclusive=False)

    assert keys.open(sealed, what="v") == "after"


def test_bad_key_files_and_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "catalog.key"
    path.write_text("# comment\nnot-a-key\n")

    with pytest.raises(ScaleoutError, match="is not a catalog key"):
        read_key_file(path)
    with pytest.raises(CatalogKeyMissing, match="does not exist"):
        read_key_file(tmp_path / "missing.key")
    with pytest.raises(ScaleoutError, match="SCALEOUT_CATALOG__KEY holds a line"):
        Keyring.from_settings("short", None)


def test_settings_choose_the_key_then_the_file_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    text = new_key_text()

    assert Keyring.from_settings(None, None).key_ids == ()
    written = ensure_default_key()
    assert written == default_key_file() == tmp_path / "config" / "scaleout" / "catalog.key"
    assert ensure_default_key() is None  # written once
    assert Keyring.from_settings(None, None).key_ids == tuple(
        k.key_id for k in read_key_file(written)
    )
    assert Keyring.from_settings(f"{text}, {new_key_text()}", written).key_ids[0] == (
        CatalogKey.parse(text, "t").key_id
    )
