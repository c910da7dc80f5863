"""``pgobs migrate``, ``track`` and ``untrack``: the schema and which tables it captures."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
import psycopg
from cyclopts import Parameter

from pgobs.cli.session import Dsn, with_connection
from pgobs.db.connect import Connection, resolve_dsn
from pgobs.db.migrate import migrate as apply_migrations
from pgobs.db.sqlfiles import query
from pgobs.errors import NotFound, PgobsError


def migrate(*, dsn: Dsn = None, dry_run: bool = False) -> None:
    """Create or upgrade the pgobs schema (safe to run from several processes at once).

    Parameters
    ----------
    dry_run
        Print the migrations that would be applied, change nothing.
    """
    plan = anyio.run(lambda: apply_migrations(resolve_dsn(dsn), dry_run=dry_run))
    if not plan.pending:
        print(f"schema is up to date (applied: {', '.join(plan.applied) or 'none'})")
        return
    verb = "would apply" if dry_run else "applied"
    print(f"{verb}: {', '.join(plan.pending)}")


def track(
    table: str,
    *,
    entity: Annotated[
        str | None, Parameter(help="entity_type of the events (default: the table name).")
    ] = None,
    id_column: str | None = None,
    dsn: Dsn = None,
) -> None:
    """Capture TABLE's row changes and TRUNCATEs as events (installs the pgobs capture triggers).

    A partitioned table is tracked whole, its future partitions included.

    Parameters
    ----------
    table
        The table, optionally schema-qualified: public.orders.
    id_column
        Column whose value becomes entity_id, or several comma-separated (their values are
        joined by ','). Default: the primary key; a table without one needs this option.
    """
    params = {"table": table, "entity": entity, "id_column": id_column}
    with_connection(dsn, lambda conn: _change_tracking(conn, "track", table, params))
    print(f"tracking {table} as {entity or table.split('.')[-1]}")


def untrack(table: str, *, dsn: Dsn = None) -> None:
    """Stop capturing TABLE's changes (removes the pgobs capture triggers; events stay).

    Parameters
    ----------
    table
        The table, optionally schema-qualified: public.orders.
    """
    with_connection(dsn, lambda conn: _change_tracking(conn, "untrack", table, {"table": table}))
    print(f"stopped tracking {table}")


async def _change_tracking(
    conn: Connection, verb: Literal["track", "untrack"], table: str, params: dict[str, str | None]
) -> None:
    """Run pgobs.track or pgobs.untrack; every refusal becomes one line with its fix."""
    try:
        await conn.execute(query(f"{verb}_table"), params)
    except psycopg.errors.UndefinedTable as exc:
        raise NotFound(f"table {table!r} does not exist", "check the name") from exc
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
        raise  # the schema is missing: with_connection says to migrate
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = exc.diag.message_primary or str(exc).strip()
        raise PgobsError(
            f"cannot {verb} {table!r}: {reason}",
            f"run pgobs {verb} as the table's owner with EXECUTE on pgobs' functions, "
            "such as the role that ran pgobs migrate",
        ) from exc
    except psycopg.DatabaseError as exc:
        reason = exc.diag.message_primary or str(exc).strip()
        fix = exc.diag.message_hint or "give an existing table"
        raise PgobsError(f"cannot {verb} {table!r}: {reason}", fix) from exc
