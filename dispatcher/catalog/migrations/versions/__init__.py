"""Alembic revisions of the catalog; Alembic loads them by path."""

from __future__ import annotations
