"""The wheel carries the SQL files, and an installed pgobs finds them outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from pgobs.db.sqlfiles import migration_files
from tests.support import ROOT


def test_the_wheel_ships_every_sql_file(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("pgobs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"pgobs/sql/{path.name}" for _, path in migration_files()} | {
        "pgobs/sql/queries.sql"
    }
    assert expected <= names
    assert "pgobs/cli/app.py" in names
