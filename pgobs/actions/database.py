"""The database action: calls ``schema.function(event jsonb)`` in the observed database."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from pgobs import jsoncodec
from pgobs.actions.failures import ActionFailed, ErrorKind
from pgobs.actions.specs import DatabaseSpec
from pgobs.db.connect import Connection

# SQLSTATE classes worth retrying: connection, transaction rollback (serialization, deadlock),
# insufficient resources, object not available (lock), operator intervention (shutdown).
_TRANSIENT_CLASSES = ("08", "40", "53", "55", "57")


async def call_function(
    pool: AsyncConnectionPool[Connection], spec: DatabaseSpec, envelope: dict[str, Any]
) -> None:
    statement = sql.SQL("SELECT {}(%s)").format(sql.Identifier(*spec.function))
    try:
        async with pool.connection() as conn:
            await conn.execute(statement, (Jsonb(envelope, dumps=jsoncodec.encode),))
    except psycopg.Error as exc:
        state = exc.sqlstate or ""
        transient = state[:2] in _TRANSIENT_CLASSES or not state
        kind: ErrorKind = "transient" if transient else "permanent"
        name = ".".join(spec.function)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ActionFailed(
            f"{name}(event) failed [{state or 'connection'}]: {first}", kind
        ) from exc
