"""Writes the wire protocol as JSON Schema files, for workers written in other languages.

One file per message type (``<type>.schema.json``, e.g. ``task.assign.schema.json``) and
``index.json`` naming them with the protocol's schema version. Run it as
``python -m schemas.export DIRECTORY``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from schemas.messages import SCHEMA_VERSION, json_schemas

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
INDEX_FILE: Final = "index.json"


def schema_file_name(message_type: str) -> str:
    return f"{message_type}.schema.json"


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every message's schema and the index into ``directory`` (created if needed);
    return the paths written, the index last. Output is stable: same models, same bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "messages": {}}
    for message_type, schema in sorted(json_schemas().items()):
        name = schema_file_name(message_type)
        written.append(_write(directory / name, {"$schema": DIALECT, **schema}))
        index["messages"][message_type] = name
    written.append(_write(directory / INDEX_FILE, index))
    return written


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m schemas.export DIRECTORY", file=sys.stderr)
        return 2
    for path in export_json_schemas(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
