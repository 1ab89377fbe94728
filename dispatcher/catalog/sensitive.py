"""The catalog's sealed (encrypted) values: which executions the master cannot open, and
the key rotation that re-encrypts every one of them in one transaction.

A sealed value is text that starts with :data:`dispatcher.keys.PREFIX`; a plain value is
JSON, which never does, so the prefix alone tells them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx
from dispatcher.catalog.tables import Tables
from dispatcher.keys import PREFIX, Keyring, is_sealed, sealed_key_id

logger = logging.getLogger(__name__)


def _sealed_columns(tx: Tx) -> list[tuple[sa.Table, sa.Column[str], str]]:
    """(table, column, what) of every column that may hold a sealed value."""
    values, params = tx.t.execution_parameter_values, tx.t.object_parameters
    variables = tx.t.environment_variables
    return [
        (values, values.c.parameter_value, "execution parameter value"),
        (params, params.c.server_value, "parameter server value"),
        (variables, variables.c.value, "environment variable"),
    ]


def unopenable(tx: Tx, keys: Keyring, execution_ids: Iterable[int]) -> dict[int, str]:
    """Of ``execution_ids``, those holding a sealed value this keyring cannot open, with
    the key id each needs: the dispatcher leaves them pending instead of failing a batch."""
    ids = sorted(set(execution_ids))
    if not ids:
        return {}
    missing: dict[int, str] = {}
    for row in tx.conn.execute(_sealed_query(tx.t), {"ids": ids}):
        if row.execution_id not in missing and not keys.can_open(row.parameter_value):
            missing[row.execution_id] = sealed_key_id(row.parameter_value)
    return missing


@cache
def _sealed_query(t: Tables) -> sa.Select[Any]:
    """Built once: the dispatcher runs it in every claim."""
    values = t.execution_parameter_values
    return sa.select(values.c.execution_id, values.c.parameter_value).where(
        values.c.execution_id.in_(sa.bindparam("ids", expanding=True)),
        values.c.parameter_value.startswith(PREFIX),
    )


def rotate_key(tx: Tx, old: Keyring, new: Keyring) -> int:
    """Re-encrypt every sealed value with ``new``'s current key; the number re-encrypted.
    One transaction: a value ``old`` cannot open refuses the whole rotation."""
    rotated = 0
    for table, column, what in _sealed_columns(tx):
        keys = list(table.primary_key.columns)
        rows = tx.conn.execute(sa.select(*keys, column).where(column.startswith(PREFIX)))
        for row in rows.all():
            stored = row[len(keys)]
            if not is_sealed(stored):
                continue
            plain = old.open(stored, what=f"a sealed {what}")
            where = [key == row[i] for i, key in enumerate(keys)]
            resealed = new.seal(plain, what=f"a {what}")
            tx.conn.execute(sa.update(table).where(*where).values({column.name: resealed}))
            rotated += 1
    logger.info("catalog.key_rotated", extra={"values": rotated, "key_id": new.key_ids[0]})
    return rotated
