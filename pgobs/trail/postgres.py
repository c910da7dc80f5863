"""``pgobs search`` on Postgres: the query as a WHERE clause over pgobs.trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import args_row

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.search import to_sql
from pgobs.search.ast import Node
from pgobs.trail.records import Record

__all__ = ["search_postgres", "search_statement"]


def search_statement(
    node: Node, since: timedelta, limit: int
) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = to_sql(node)
    statement = sql.SQL(query("search_trail")).format(where=where)
    return statement, {**params, "since": since, "limit": limit}


async def search_postgres(
    conn: Connection, node: Node, since: timedelta, limit: int
) -> list[Record]:
    statement, params = search_statement(node, since, limit)
    async with conn.cursor(row_factory=args_row(_record)) as cur:
        await cur.execute(statement, params)
        return await cur.fetchall()


def _record(*row: Any) -> Record:
    values = list(row)
    values[12] = tuple(values[12])  # observers
    return Record(*values)
