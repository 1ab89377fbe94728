"""How the runner turns an assignment's parameters into argv, environment and stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from consumers.worker import runner
from consumers.worker.runner import (
    MESSAGE_TYPE_ERROR,
    MESSAGE_TYPE_INFO,
    MESSAGE_TYPE_PROGRESS,
    MESSAGE_TYPE_WARNING,
    PackageError,
    build_launch,
    child_environment,
    classify,
    env_name,
    resolve_parameters,
    summarise,
)
from schemas.messages import ParameterValue
from schemas.project import ProjectManifest

MANIFEST = ProjectManifest.model_validate(
    {
        "name": "P",
        "parameters": [{"name": "Stage", "default": "dev"}],
        "packages": [
            {
                "name": "Load",
                "entry": {"argv": ["{python}", "load.py", "--n={Count}", "{Flag}", "{Word}"]},
                "parameters": [
                    {"name": "Count", "type": "int", "default": 3},
                    {"name": "Flag", "type": "bool", "default": False},
                    {"name": "Word", "required": True},
                    {"name": "Api.Key", "sensitive": True},
                ],
            },
            {"name": "Call", "entry": {"callable": "mod.sub:run"}},
        ],
    }
)
LOAD = MANIFEST.packages[0]


def pv(
    name: str, value: object, object_type: int = 30, *, sensitive: bool = False
) -> ParameterValue:
    return ParameterValue(name=name, value=value, object_type=object_type, sensitive=sensitive)  # type: ignore[arg-type]


def test_assigned_values_override_defaults_and_fill_placeholders() -> None:
    """Assigned values replace defaults, are coerced, and fill argv; {python} is the interpreter."""
    params, notes = resolve_parameters(
        MANIFEST, LOAD, [pv("Count", "7"), pv("Flag", "yes"), pv("Word", "hi there")]
    )
    launch = build_launch(LOAD, params, python="/py")
    assert launch.argv == ("/py", "load.py", "--n=7", "true", "hi there")
    assert launch.stdin is None
    assert notes == ()


def test_every_parameter_is_in_the_environment_sensitive_ones_only_there() -> None:
    """Project and package parameters become SSIS_PARAM_<NAME>; a secret is in env, not argv."""
    params, _ = resolve_parameters(
        MANIFEST, LOAD, [pv("Word", "w"), pv("Api.Key", "s3cret"), pv("Stage", "prod", 20)]
    )
    launch = build_launch(LOAD, params)
    assert launch.env["SSIS_PARAM_STAGE"] == "prod"
    assert launch.env["SSIS_PARAM_API_KEY"] == "s3cret"
    assert launch.env["SSIS_PARAM_COUNT"] == "3"
    assert launch.env["SSIS_PARAM_FLAG"] == "false"
    assert not any("s3cret" in arg for arg in launch.argv)
    assert launch.argv[0] == sys.executable


def test_a_missing_required_parameter_is_refused_by_name() -> None:
    """No value for a required parameter refuses the task and names the parameter."""
    with pytest.raises(PackageError, match="required parameter Word has no value"):
        resolve_parameters(MANIFEST, LOAD, [])


def test_a_mistyped_parameter_is_refused_without_echoing_a_secret() -> None:
    """A wrong type is refused with the expected type; a sensitive value is not echoed."""
    with pytest.raises(PackageError, match="Count takes a int, not 'many'"):
        resolve_parameters(MANIFEST, LOAD, [pv("Word", "w"), pv("Count", "many")])
    with pytest.raises(PackageError) as refused:
        resolve_parameters(
            MANIFEST, LOAD, [pv("Word", "w"), pv("Count", "hunter2", sensitive=True)]
        )
    assert "hunter2" not in str(refused.value)


def test_undeclared_parameters_are_noted_and_system_ones_ignored() -> None:
    """A value for no declared parameter becomes a note; system parameters (50) are silent."""
    _, notes = resolve_parameters(
        MANIFEST, LOAD, [pv("Word", "w"), pv("Bogus", 1), pv("LOGGING_LEVEL", 1, 50)]
    )
    assert notes == ("parameter Bogus (object type 30) is not declared; ignored",)


def test_a_callable_gets_its_parameters_as_json_on_stdin() -> None:
    """A callable runs through python -c with module:function, parameters as JSON on stdin."""
    call = MANIFEST.packages[1]
    params, _ = resolve_parameters(MANIFEST, call, [])
    launch = build_launch(call, params, python="/py")
    assert launch.argv[0] == "/py"
    assert launch.argv[1] == "-c"
    assert launch.argv[-1] == "mod.sub:run"
    assert launch.stdin is not None
    assert json.loads(launch.stdin) == {"Stage": "dev"}


def test_the_package_does_not_inherit_the_worker_settings() -> None:
    """SCALEOUT_* variables (broker URL, key paths) stay out of the package's environment."""
    env = child_environment(
        {"SSIS_PARAM_X": "1"}, {"SCALEOUT_BROKER__URL": "amqps://u:p@h", "PATH": "/bin"}
    )
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", "SSIS_PARAM_X": "1"}


def test_env_names_are_upper_case_and_safe() -> None:
    """Parameter names become SSIS_PARAM_ plus upper case, other characters as _."""
    assert env_name("Input.File-2") == "SSIS_PARAM_INPUT_FILE_2"


def test_lines_get_ssis_message_types() -> None:
    """stdout is information, stderr warning, error-looking lines error, progress lines progress."""
    assert classify("stdout", "loaded 3 rows") == MESSAGE_TYPE_INFO
    assert classify("stderr", "deprecated option") == MESSAGE_TYPE_WARNING
    assert classify("stderr", "Traceback (most recent call last):") == MESSAGE_TYPE_ERROR
    assert classify("stdout", "ERROR: no such table") == MESSAGE_TYPE_ERROR
    assert classify("stdout", "Progress: 50%") == MESSAGE_TYPE_PROGRESS


def test_the_error_summary_keeps_the_last_stderr_lines() -> None:
    """The summary joins the non-blank stderr tail and keeps its end when too long."""
    assert summarise(["a", " ", "b"]) == "a\nb"
    assert summarise(["x" * 50, "the end"], max_chars=10) == "xx\nthe end"


def _fake_setpriv(folder: Path, help_text: str) -> Path:
    tool = folder / "setpriv"
    tool.write_text(f"#!/bin/sh\necho '{help_text}'\n")
    tool.chmod(0o755)
    return tool


def test_only_a_setpriv_that_knows_pdeathsig_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old setpriv (before util-linux 2.33) would fail every package: it is not used."""
    monkeypatch.setenv("PATH", str(tmp_path))
    _fake_setpriv(tmp_path, "Usage: setpriv [options] <program> [<argument>...]")
    assert runner._usable_setpriv() is None
    tool = _fake_setpriv(tmp_path, " --pdeathsig keep|clear|<signal>  set or clear")
    assert runner._usable_setpriv() == str(tool)


def test_a_package_is_tied_to_its_worker_by_setpriv_else_by_prctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With setpriv the argv is wrapped and nothing runs in the child before exec;
    without it the argv is kept and the preexec hook sets the signal."""
    monkeypatch.setattr(runner, "SETPRIV", "/usr/bin/setpriv")
    spawn = runner.tied_to_worker((sys.executable, "-c", "pass"), tmp_path, {})
    assert spawn.argv == (
        "/usr/bin/setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        sys.executable,
        "-c",
        "pass",
    )
    assert spawn.preexec is None
    monkeypatch.setattr(runner, "SETPRIV", None)
    spawn = runner.tied_to_worker((sys.executable, "-c", "pass"), tmp_path, {})
    assert spawn.argv == (sys.executable, "-c", "pass")
    assert spawn.preexec is not None
