"""Alembic migrations of the catalog (run from code by ``Catalog.init``)."""

from __future__ import annotations
