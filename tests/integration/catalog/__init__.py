"""Integration tests of the SSISDB catalog on real SQLite and PostgreSQL databases."""
