"""The import contracts in pyproject.toml hold, and they would catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "300"},  # one contract per line, whatever the terminal
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The three packages and the contracts, copied, so a test can break them."""
    for package in ("dispatcher", "consumers", "schemas"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_repository_keeps_every_contract() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("consumers/worker/leak.py", "import dispatcher.catalog", "The worker talks only"),
        ("dispatcher/broker/leak.py", "import dispatcher.catalog.records", "The broker adapter"),
        ("schemas/leak.py", "import dispatcher.settings", "The wire contract"),
        ("dispatcher/leak.py", "import sqlalchemy", "SQL only in the catalog"),
        ("dispatcher/leak.py", "import pika", "pika only in the broker"),
        ("dispatcher/leak.py", "import dispatcher.cli.render", "Only the CLI renders"),
        ("consumers/master/leak.py", "import consumers.worker.tasks", "independent programs"),
        ("dispatcher/leak.py", "import dispatcher.web", "Only the CLI starts the web console"),
        ("dispatcher/web/leak.py", "import consumers.worker", "no part of the master's"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree_copy: Path, module: str, line: str, contract: str
) -> None:
    (tree_copy / module).write_text(f"from __future__ import annotations\n\n{line}\n")
    done = lint_imports(tree_copy)
    assert done.returncode != 0
    broken = [row for row in done.stdout.splitlines() if row.endswith(" BROKEN")]
    assert len(broken) == 1, done.stdout
    assert contract in broken[0]
