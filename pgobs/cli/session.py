"""What every database command shares: the --dsn option and one connection, with the usual
failures turned into one-line errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import anyio
import psycopg
from cyclopts import Parameter

from pgobs.db.connect import Connection, connect, resolve_dsn
from pgobs.errors import ConnectionFailed, PgobsError

T = TypeVar("T")

Dsn = Annotated[
    str | None,
    Parameter(
        env_var=["PGOBS_DSN", "DATABASE_URL"],
        help="Postgres connection string (else PGOBS_DSN, else DATABASE_URL; without any: "
        "an embedded Postgres).",
    ),
]


def with_connection(dsn: str | None, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one autocommit connection to the resolved DSN."""

    async def run() -> T:
        conn = await connect(resolve_dsn(dsn), autocommit=True)
        try:
            return await work(conn)
        except (
            psycopg.errors.UndefinedTable,
            psycopg.errors.InvalidSchemaName,
            psycopg.errors.UndefinedFunction,
        ) as exc:
            raise PgobsError(
                f"the pgobs schema is missing or outdated ({exc.diag.message_primary})",
                "run pgobs migrate",
            ) from exc
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(
                f"the database connection failed: {exc}", "check the server"
            ) from exc
        finally:
            await conn.close()

    return anyio.run(run)
