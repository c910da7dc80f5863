"""Where pgobs' SQL lives, and the named queries of ``sql/queries.sql``."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import LiteralString, cast

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_QUERY_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """The folder holding the migrations: inside the wheel, or ``sql/`` of a source checkout."""
    packaged = Path(str(resources.files("pgobs"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def migration_files() -> list[tuple[str, Path]]:
    """(version, path) of every migration, in order."""
    found = []
    for path in sql_dir().iterdir():
        match = _MIGRATION.match(path.name)
        if match:
            found.append((match.group(1), path))
    return sorted(found)


@cache
def queries() -> dict[str, LiteralString]:
    """The blocks of ``queries.sql``, each introduced by a ``-- name: NAME`` line."""
    text = (sql_dir() / "queries.sql").read_text()
    parts = _QUERY_NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {
        name: cast(LiteralString, body.strip().rstrip(";"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def query(name: str) -> LiteralString:
    return queries()[name]
