"""Checking python handlers: by default from their source, never running the user's module;
with ``import_handlers`` by importing them, as the worker must."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgobs.actions.specs import PythonSpec
from pgobs.config.loader import parse_config_file
from pgobs.config.report import ConfigIssue

# Importing this module leaves a file behind and then fails: any import shows.
SIDE_EFFECT = """
from pathlib import Path

Path(__file__).with_suffix(".ran").write_text("imported")


async def on_order(event):
    return None


def on_refund(event):
    return None


alias = on_refund
LIMIT = 3
raise RuntimeError("this module must not be imported by validation")
"""


def config(folder: Path, *handlers: str) -> Path:
    actions = "".join(f"      - type: python\n        handler: {h}\n" for h in handlers)
    path = folder / "observers.yaml"
    path.write_text(f"observers:\n  - name: obs\n    entity: Order\n    actions:\n{actions}")
    return path


@pytest.fixture
def module(tmp_path: Path) -> Iterator[str]:
    """A uniquely named module beside the config, forgotten again afterwards."""
    name = f"hooks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SIDE_EFFECT)
    path_before = list(sys.path)
    yield name
    sys.path[:] = path_before
    for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[loaded]


def errors(issues: list[ConfigIssue]) -> list[str]:
    return [str(i) for i in issues if i.severity == "error"]


def test_handlers_are_found_in_the_source_without_running_the_module(
    tmp_path: Path, module: str
) -> None:
    path_before = list(sys.path)
    file = config(tmp_path, f"{module}:on_order", f"{module}:on_refund", f"{module}:alias")
    loaded, issues = parse_config_file(file, import_handlers=False)
    assert issues == []
    assert loaded is not None
    specs = loaded.observers[0].actions
    assert all(isinstance(s, PythonSpec) for s in specs)
    assert [s.is_async for s in specs if isinstance(s, PythonSpec)] == [True, False, False]
    assert not (tmp_path / f"{module}.ran").exists()
    assert module not in sys.modules
    assert sys.path == path_before


def test_a_missing_function_is_reported_at_its_line_without_running_the_module(
    tmp_path: Path, module: str
) -> None:
    file = config(tmp_path, f"{module}:on_order", f"{module}:on_cancel")
    loaded, issues = parse_config_file(file, import_handlers=False)
    assert loaded is None
    (error,) = errors(issues)
    assert error.startswith(f"{file}:8: error: ")
    assert f"{tmp_path / module}.py has no function 'on_cancel'" in error
    assert "define def on_cancel(event) or async def on_cancel(event)" in error
    assert not (tmp_path / f"{module}.ran").exists()


def test_a_name_bound_to_a_plain_value_is_not_a_handler(tmp_path: Path, module: str) -> None:
    loaded, issues = parse_config_file(config(tmp_path, f"{module}:LIMIT"), import_handlers=False)
    assert loaded is None
    (error,) = errors(issues)
    assert f"'LIMIT' in {tmp_path / module}.py (line 16) is not a function" in error


def test_parent_packages_are_not_run_either(tmp_path: Path) -> None:
    name = f"pkg_{uuid.uuid4().hex[:8]}"
    package = tmp_path / name
    (package / "inner").mkdir(parents=True)  # inner: a namespace package, no __init__.py
    (package / "__init__.py").write_text(SIDE_EFFECT)
    (package / "inner" / "hooks.py").write_text("async def on_order(event):\n    pass\n")
    file = config(tmp_path, f"{name}.inner.hooks:on_order", f"{name}.inner.hooks:nope")
    loaded, issues = parse_config_file(file, import_handlers=False)
    assert [i.line for i in issues] == [8]
    assert "has no function 'nope'" in errors(issues)[0]
    assert loaded is None
    assert not (package / "__init__.ran").exists()
    assert name not in sys.modules


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        ("no_such_module_xyz:run", "cannot find module 'no_such_module_xyz'"),
        ("json.nope:dumps", "cannot find module 'json.nope'"),
        ("json.decoder.x:run", "'json.decoder' is a module, not a package"),
    ],
)
def test_modules_that_cannot_be_found(tmp_path: Path, handler: str, words: str) -> None:
    loaded, issues = parse_config_file(config(tmp_path, handler), import_handlers=False)
    assert loaded is None
    (error,) = errors(issues)
    assert words in error
    assert error.startswith(f"{tmp_path / 'observers.yaml'}:6: error: ")


def test_a_syntax_error_in_the_module_names_its_file_and_line(tmp_path: Path) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def ok(event):\n    return (\n")
    loaded, issues = parse_config_file(config(tmp_path, f"{name}:ok"), import_handlers=False)
    assert loaded is None
    (error,) = errors(issues)
    assert f"{tmp_path / name}.py:2" in error and "syntax" in error


def test_what_the_source_cannot_settle_is_a_warning(tmp_path: Path) -> None:
    name = f"star_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("from json import *\n")
    loaded, issues = parse_config_file(
        config(tmp_path, f"{name}:dumps", "_json:scanstring"), import_handlers=False
    )
    assert loaded is not None
    assert [i.severity for i in issues] == ["warning", "warning"]
    assert "import *" in issues[0].message and "compiled" in issues[1].message
    assert all("--import-handlers" in (i.hint or "") for i in issues)


def test_import_handlers_imports_them_for_a_full_check(tmp_path: Path, module: str) -> None:
    loaded, issues = parse_config_file(config(tmp_path, f"{module}:on_order"))
    assert loaded is None
    (error,) = errors(issues)
    assert "cannot import" in error and "must not be imported by validation" in error
    assert (tmp_path / f"{module}.ran").read_text() == "imported"
