"""The real ``scaleout`` command tree, read from its ``--help`` output, and the
``scaleout ...`` invocations that the compose file and its scripts make."""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.integration.ops.support import REPO, run

_PANEL_START = re.compile(r"^[╭┌+]─+ (?P<title>[A-Za-z ]+?) ─")
_PLAIN_SECTION = re.compile(r"^(?P<title>[A-Z][a-z]+):$")
_COMMAND = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)(?:\s{2,}|$)")
_META = re.compile(r"^(?:<\w|[A-Z][A-Z_]*$)")


@dataclass(frozen=True)
class Help:
    """One ``scaleout ... --help`` page: its subcommands, and its options (name -> whether
    it takes a value)."""

    commands: frozenset[str]
    options: dict[str, bool] = field(default_factory=dict)


@cache
def help_page(path: tuple[str, ...]) -> Help:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = run([sys.executable, "-m", "dispatcher.cli", *path, "--help"], cwd=REPO, env=env)
    assert done.returncode == 0, f"scaleout {' '.join(path)} --help failed:\n{done.stderr}"
    return parse_help(done.stdout)


def parse_help(text: str) -> Help:
    """Read typer's rich panels (``╭─ Commands ─╮``) or click's plain ``Commands:`` list."""
    commands: set[str] = set()
    options: dict[str, bool] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if panel := _PANEL_START.match(line) or _PLAIN_SECTION.match(line):
            section = panel["title"].strip().lower()
            continue
        if line.startswith(("╰", "└")):
            section = ""
            continue
        if line.startswith("│"):
            body = line.strip("│").rstrip()[1:]  # one space pads the panel's border
        elif raw.startswith("  "):
            body = raw[2:]
        else:
            continue
        if not body or body.startswith(" "):
            continue  # a description's continuation line
        if section == "commands" and (command := _COMMAND.match(body)):
            commands.add(command["name"])
        elif section == "options":
            _read_option_row(body.split(), options)
    return Help(frozenset(commands), options)


def _read_option_row(tokens: list[str], options: dict[str, bool]) -> None:
    names = []
    for token in tokens:
        if token.startswith("-"):
            names.append(token.rstrip(","))
            continue
        takes_value = bool(_META.match(token)) and token != "<bool>"
        options.update(dict.fromkeys(names, takes_value))
        return
    options.update(dict.fromkeys(names, False))


def check_invocation(argv: list[str]) -> str | None:
    """Why ``scaleout argv...`` names a command or option the CLI lacks; None when it is fine."""
    path: list[str] = []
    page = help_page(())
    args = iter(argv)
    for token in args:
        if token == "--help":
            return None
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            if name not in page.options:
                return f"scaleout {' '.join(path)}: no option {name}"
            if page.options[name] and "=" not in token:
                next(args, None)
            continue
        if not page.commands:
            continue  # a leaf command's argument
        if token not in page.commands:
            return f"scaleout {' '.join(path)}: no command {token!r} (has {sorted(page.commands)})"
        path.append(token)
        page = help_page(tuple(path))
    if page.commands:
        return f"scaleout {' '.join(path)} needs a subcommand"
    return None


def command_path(argv: list[str]) -> tuple[str, ...]:
    """The subcommand words of ``scaleout argv...`` (options and arguments left out)."""
    path: list[str] = []
    page = help_page(())
    args = iter(argv)
    for token in args:
        if token.startswith("-"):
            if page.options.get(token.split("=", 1)[0]) and "=" not in token:
                next(args, None)
            continue
        if token not in page.commands:
            break
        path.append(token)
        page = help_page(tuple(path))
    return tuple(path)


_SCRIPT_CALL = re.compile(r"(?<![\w/.$-])scaleout\s+(?P<args>[^;&|)<>\n]*)")


def script_invocations(script: Path) -> list[list[str]]:
    """The ``scaleout`` argument lists a shell script runs (comment lines left out)."""
    calls: list[list[str]] = []
    for line in script.read_text().splitlines():
        code = line.strip()
        if code.startswith("#"):
            continue
        code = re.sub(r"\s#.*$", "", code)
        calls.extend(shlex.split(match["args"]) for match in _SCRIPT_CALL.finditer(code))
    return calls
