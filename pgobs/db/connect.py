"""Opening connections and pools from ``--dsn`` / ``PGOBS_DSN`` (or the embedded Postgres)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from pgobs import jsoncodec
from pgobs.db.embedded import embedded_dsn
from pgobs.errors import ConnectionFailed
from pgobs.events import DATA_ERROR_KEY

Connection = psycopg.AsyncConnection[TupleRow]

CONNECT_TIMEOUT_S = 5


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the option, else ``PGOBS_DSN``, else ``DATABASE_URL`` (the name most
    platforms set), else the embedded server's."""
    chosen = dsn or os.environ.get("PGOBS_DSN") or os.environ.get("DATABASE_URL")
    if not chosen:
        chosen = embedded_dsn()
    try:
        params = conninfo_to_dict(chosen)
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(
            f"the DSN is not valid: {exc}", "use postgresql://user@host:5432/dbname"
        ) from exc
    extra: dict[str, Any] = {"application_name": params.get("application_name") or "pgobs"}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    return make_conninfo(chosen, **extra)


def _describe(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    host = params.get("host") or "localhost"
    where = f"{host}:{params.get('port') or 5432}" if not str(host).startswith("/") else host
    return f"{where}/{params.get('dbname') or params.get('user') or ''}"


def connection_failed(dsn: str, exc: psycopg.Error) -> ConnectionFailed:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConnectionFailed(
        f"cannot connect to Postgres at {_describe(dsn)}: {reason}",
        "check --dsn, PGOBS_DSN or DATABASE_URL and that the server is running",
    )


def decode_json(data: bytes | str) -> Any:
    """jsonb to Python with exact numbers (see pgobs.jsoncodec). A value too deep to decode
    becomes a marked error instead of an exception, so one odd event can never stop a batch."""
    try:
        return jsoncodec.decode(data)
    except jsoncodec.DecodeFailed as exc:
        return {DATA_ERROR_KEY: f"jsonb value pgobs cannot decode: {exc}"}


def configure_json(conn: psycopg.AsyncConnection[Any]) -> None:
    """jsonb in and out with exact numbers, at orjson's speed on the hot paths."""
    set_json_loads(decode_json, conn)
    set_json_dumps(jsoncodec.encode, conn)


async def connect(
    dsn: str, *, autocommit: bool = False, application_name: str | None = None
) -> Connection:
    if application_name:
        dsn = make_conninfo(dsn, application_name=application_name)
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise connection_failed(dsn, exc) from exc
    configure_json(conn)
    return conn


async def _configure_pooled(conn: psycopg.AsyncConnection[Any]) -> None:
    configure_json(conn)


@asynccontextmanager
async def open_pool(
    dsn: str, *, max_size: int = 4, name: str = "pgobs"
) -> AsyncIterator[AsyncConnectionPool[Connection]]:
    """A pool of autocommit connections (one round trip per statement; a multi-statement unit
    uses ``conn.transaction()``) that fails fast when the server is unreachable."""
    # One direct connection first: the pool alone would retry silently for its whole timeout.
    probe = await connect(dsn)
    await probe.close()
    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        configure=_configure_pooled,
        kwargs={"autocommit": True},
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
    try:
        yield pool
    finally:
        await pool.close()
