"""``pgobs --version`` and ``pgobs --help`` start fast: they import no heavy library and no part
of the pipeline (each command's module is imported only when that command runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import pgobs_env

# What a command may import, but never the bare CLI: the database driver, HTTP, the async
# runtime, metrics, and the pipeline's own layers.
HEAVY = (
    "psycopg",
    "psycopg_pool",
    "httpx",
    "anyio",
    "prometheus_client",
    "yaml",
    "pgobs.db",
    "pgobs.config",
    "pgobs.listener",
    "pgobs.queue",
    "pgobs.actions",
    "pgobs.supervisor",
    "pgobs.observability",
    "markdown_it",  # help as markdown: only a command's own page pays for it
)


# The console script's own code (``pgobs = "pgobs.cli.app:main"``), with the process's modules
# listed as it exits.
ENTRY = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr))\n"
    "from pgobs.cli.app import main\n"
    "main()\n"
)


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run pgobs' entry point in a fresh interpreter: every module the process imported."""
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=pgobs_env("postgresql://unused@127.0.0.1:1/none"),
        check=False,
    )
    (listing,) = [line for line in result.stderr.splitlines() if line.startswith("MODULES ")]
    return result, set(listing.split()[1:])


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_nothing_heavy(flag: str) -> None:
    result, modules = imported_modules(flag)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pgobs.cli.app" in modules  # the measurement sees pgobs' own imports
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == [], f"pgobs {flag} imported {heavy}"
    commands = sorted(m for m in modules if m.startswith("pgobs.cli.") and m != "pgobs.cli.app")
    assert commands == [], f"pgobs {flag} imported command modules {commands}"


def test_a_command_imports_only_what_it_needs() -> None:
    """validate-config reads files: no database driver, HTTP or metrics."""
    result, modules = imported_modules("validate-config", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pgobs.cli.validate" in modules
    assert not {"psycopg", "prometheus_client", "pgobs.listener", "pgobs.cli.status"} & modules
