"""Sensitive values at rest, on both databases: sealed in the catalog (no table row and no
byte of the SQLite files holds the plain text), opened only into an assignment, copied
sealed by a rerun, re-encrypted by a key rotation in one transaction, and an execution
whose key the master lacks waits while the others dispatch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dispatcher.api import ScaleOut, rotate_catalog_key
from dispatcher.catalog import Catalog
from dispatcher.errors import CatalogKeyMissing
from dispatcher.keys import Keyring, new_key_text, read_key_file, write_key_file
from tests.fixtures.catalog import deploy_sample, online_worker, table_counts

SECRET = "s3cret-4b1d9e"


@pytest.fixture
def opener(catalog_url: str) -> Iterator[Callable[..., Catalog]]:
    """Opens more handles on the test's catalog (other keys), closed at the end."""
    opened: list[Catalog] = []

    def open_catalog(keyring: Keyring | None = None) -> Catalog:
        opened.append(Catalog.open(catalog_url, keyring=keyring))
        return opened[-1]

    yield open_catalog
    for handle in opened:
        handle.close()


def every_row(url: str) -> list[str]:
    """Every row of every table (ours and any other), as text, read with a plain engine."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            schemas = [None] if engine.dialect.name == "sqlite" else inspector.get_schema_names()
            rows: list[str] = []
            for schema in schemas:
                if schema in {"information_schema", "pg_catalog", "pg_toast"}:
                    continue
                for name in inspector.get_table_names(schema=schema):
                    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
                    rows += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
            return rows
    finally:
        engine.dispose()


def catalog_bytes(url: str) -> bytes:
    """The SQLite database file and its WAL and shared-memory files."""
    path = Path(make_url(url).database or "")
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))


def assert_nowhere(url: str, text: str) -> None:
    rows = every_row(url)
    assert rows  # the dump read something
    assert not [row for row in rows if text in row]
    if url.startswith("sqlite"):
        assert text.encode() not in catalog_bytes(url)


def sensitive_execution(catalog: Catalog, secret: str = SECRET) -> int:
    deploy_sample(catalog)
    return ScaleOut(catalog).create_execution(
        "Finance", "Sales", "Load", parameters={"Rows": 3, "ApiKey": secret}
    )


def test_a_sensitive_value_is_sealed_at_rest_and_opened_only_into_the_assignment(
    catalog: Catalog, catalog_url: str, opener: Callable[..., Catalog]
) -> None:
    online_worker(catalog, "w1")
    execution_id = sensitive_execution(catalog)
    catalog.start_execution(execution_id)

    [assignment] = catalog.claim_tasks(5)

    values = {p.name: (p.value, p.sensitive) for p in assignment.parameters}
    assert values == {"Rows": (3, False), "ApiKey": (SECRET, True)}
    assert_nowhere(catalog_url, SECRET)
    assert any("enc:v1:" in row for row in every_row(catalog_url))
    [republished] = catalog.unpublished_assignments(0)
    assert {p.name: p.value for p in republished.parameters}["ApiKey"] == SECRET


def test_without_its_key_an_execution_waits_and_the_others_dispatch(
    catalog: Catalog, catalog_url: str, opener: Callable[..., Catalog]
) -> None:
    """A master without the key leaves the sealed execution pending (a clear error when
    something must open it) and still dispatches an execution without sensitive values."""
    online_worker(catalog, "w1")
    sealed = sensitive_execution(catalog)
    catalog.start_execution(sealed)
    plain = catalog.create_execution("Finance", "Sales", "Load")
    catalog.start_execution(plain)
    keyless = opener(Keyring.generate())

    claimed = keyless.claim_tasks(5)

    assert [a.execution_id for a in claimed] == [plain]
    assert [a.execution_id for a in catalog.claim_tasks(5)] == [sealed]
    with pytest.raises(CatalogKeyMissing) as info:
        keyless.unpublished_assignments(0)
    said = str(info.value)
    assert f"execution {sealed}'s sensitive parameter ApiKey" in said
    assert f"catalog key {catalog.keyring.key_ids[0]}" in said
    assert "SCALEOUT_CATALOG__KEY_FILE" in info.value.hint
    assert SECRET not in said


def test_rerun_copies_values_sealed_and_the_allowed_workers(
    catalog: Catalog, catalog_url: str, opener: Callable[..., Catalog]
) -> None:
    online_worker(catalog, "w1")
    online_worker(catalog, "w2")
    deploy_sample(catalog)
    so = ScaleOut(catalog)
    first = so.create_execution(
        "Finance", "Sales", "Load", parameters={"Rows": 3, "ApiKey": SECRET}, workers=["w2"]
    )
    catalog.start_execution(first, retry_count=2)
    keyless = ScaleOut(opener())  # copying needs no key

    again = keyless.rerun_execution(first, caller="ann")

    row = catalog.get_execution(again)
    assert (row.package_name, row.status.label, row.allowed_workers) == ("Load", "pending", ("w2",))
    assignments = {a.execution_id: a for a in catalog.claim_tasks(5)}
    values = {p.name: p.value for p in assignments[again].parameters}
    assert values == {"Rows": 3, "ApiKey": SECRET}
    assert assignments[again].worker_id == "w2"
    assert assignments[again].max_attempts == 3
    assert_nowhere(catalog_url, SECRET)
    before = table_counts(catalog_url)
    with pytest.raises(Exception, match="execution 999 does not exist"):
        keyless.rerun_execution(999)
    assert table_counts(catalog_url) == before


def test_rotation_reencrypts_everything_and_retires_the_old_key(
    catalog: Catalog, catalog_url: str, tmp_path: Path, opener: Callable[..., Catalog]
) -> None:
    online_worker(catalog, "w1")
    execution_id = sensitive_execution(catalog)
    key_file = tmp_path / "catalog.key"
    old_keys = catalog.keyring
    rotating = opener(old_keys)

    rotated = rotate_catalog_key(rotating, key_file)

    assert rotated == 1
    new_keys = Keyring(file=key_file)
    assert new_keys.key_ids != old_keys.key_ids
    assert not key_file.with_name("catalog.key.new").exists()
    catalog.start_execution(execution_id)
    assert opener(old_keys).claim_tasks(5) == []
    [assignment] = opener(new_keys).claim_tasks(5)
    assert {p.name: p.value for p in assignment.parameters}["ApiKey"] == SECRET
    assert_nowhere(catalog_url, SECRET)


def test_a_rotation_that_cannot_open_a_value_changes_nothing(
    catalog: Catalog, catalog_url: str, tmp_path: Path, opener: Callable[..., Catalog]
) -> None:
    """One value sealed under a key the rotating process lacks: the whole rotation is
    refused, every row is as it was, and the key file is untouched."""
    sensitive_execution(catalog, "one-secret")
    other = Keyring.generate()
    ScaleOut(opener(other)).create_execution(
        "Finance", "Sales", "Load", parameters={"ApiKey": "two-secret"}
    )
    key_file = tmp_path / "catalog.key"
    current = new_key_text()
    write_key_file(key_file, [current], exclusive=True)
    before = sorted(every_row(catalog_url))

    with pytest.raises(CatalogKeyMissing, match="cannot decrypt a sealed execution parameter"):
        rotate_catalog_key(opener(catalog.keyring), key_file)

    assert sorted(every_row(catalog_url)) == before
    assert [k.key_id for k in read_key_file(key_file)] == [Keyring(file=key_file).key_ids[0]]
    assert key_file.read_text().splitlines()[-1] == current
    assert not key_file.with_name("catalog.key.new").exists()


def test_a_running_master_rereads_the_key_file_after_a_rotation(
    catalog: Catalog, catalog_url: str, tmp_path: Path, opener: Callable[..., Catalog]
) -> None:
    """The master's keyring comes from a file; after rotate-key replaced it, the first
    value sealed under the new key makes it read the file again."""
    key_file = tmp_path / "catalog.key"
    write_key_file(key_file, [new_key_text()], exclusive=True)
    master = opener(Keyring(file=key_file))
    online_worker(master, "w1")
    execution_id = sensitive_execution(master)
    rotate_catalog_key(opener(Keyring(file=key_file)), key_file)
    master.start_execution(execution_id)

    [assignment] = master.claim_tasks(5)

    assert {p.name: p.value for p in assignment.parameters}["ApiKey"] == SECRET
