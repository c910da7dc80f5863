"""``pgobs migrate``: apply the missing migration files, one process at a time."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgobs.db.connect import Connection, connect
from pgobs.db.sqlfiles import migration_files, query
from pgobs.errors import PgobsError


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    applied: list[str]
    pending: list[str]


async def migrate(dsn: str, *, dry_run: bool = False) -> MigrationPlan:
    """Apply every migration not yet recorded in ``pgobs.schema_migrations``.

    An advisory lock serialises concurrent runs: the second waits, then finds nothing to do.
    Each file carries its own BEGIN/COMMIT so it works through ``psql -f`` too.
    """
    conn = await connect(dsn, autocommit=True)
    try:
        await conn.execute(query("migration_lock"))
        try:
            done = await _applied(conn)
            pending = [(v, p) for v, p in migration_files() if v not in done]
            if not dry_run:
                for version, path in pending:
                    try:
                        await conn.execute(path.read_text())
                    except psycopg.Error as exc:
                        await conn.execute("ROLLBACK")  # the file's own transaction, aborted
                        reason = exc.diag.message_primary or str(exc).strip()
                        raise PgobsError(
                            f"migration {version} ({path.name}) failed: {reason}",
                            "fix the cause (often privileges) and run pgobs migrate again",
                        ) from exc
            return MigrationPlan(applied=sorted(done), pending=[v for v, _ in pending])
        finally:
            await conn.execute(query("migration_unlock"))
    finally:
        await conn.close()


async def ensure_migrated(dsn: str) -> None:
    """Refuse to run against a database whose pgobs schema is missing or behind this version."""
    conn = await connect(dsn, autocommit=True)
    try:
        done = await _applied(conn)
    finally:
        await conn.close()
    missing = [v for v, _ in migration_files() if v not in done]
    if missing:
        what = "has no pgobs schema" if not done else f"lacks migrations {', '.join(missing)}"
        raise PgobsError(f"the database {what}", "run pgobs migrate")


async def _applied(conn: Connection) -> set[str]:
    cur = await conn.execute(query("migrations_table_exists"))
    exists = await cur.fetchone()
    if not (exists and exists[0]):
        return set()
    cur = await conn.execute(query("applied_migrations"))
    return {version for (version,) in await cur.fetchall()}
