"""Catalog fixtures for this folder (defined in tests/fixtures/catalog.py)."""

from __future__ import annotations

from tests.fixtures.catalog import catalog, catalog_url, pg_catalog_url, pg_template

__all__ = ["catalog", "catalog_url", "pg_catalog_url", "pg_template"]
