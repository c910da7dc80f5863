"""Python action handlers the tests' worker processes load (tests/ is on their PYTHONPATH).
Each records what it did in the test's own database (PGOBS_DSN)."""

from __future__ import annotations

import asyncio
import os
import time

import psycopg

from pgobs import Event, PermanentError


async def record(event: Event) -> None:
    async with await psycopg.AsyncConnection.connect(os.environ["PGOBS_DSN"]) as conn:
        await conn.execute("INSERT INTO handled (event_id, how) VALUES (%s, 'async')", (event.id,))


def record_sync(event: Event) -> None:
    with psycopg.connect(os.environ["PGOBS_DSN"]) as conn:
        conn.execute("INSERT INTO handled (event_id, how) VALUES (%s, 'sync')", (event.id,))


async def slow(event: Event) -> None:
    """Marks its start, takes PGOBS_TEST_SLOW_S seconds, then records that it finished."""
    dsn = os.environ["PGOBS_DSN"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid())
        )
        await asyncio.sleep(float(os.environ.get("PGOBS_TEST_SLOW_S", "1.5")))
        await conn.execute("INSERT INTO handled (event_id, how) VALUES (%s, 'slow')", (event.id,))


def reject(event: Event) -> None:
    raise PermanentError(f"order {event.entity_id} can never be shipped")


def blocking(event: Event) -> None:
    time.sleep(0.2)


async def hang(event: Event) -> None:
    await asyncio.sleep(3600)


def blocking_long(event: Event) -> None:
    time.sleep(3)


def nul_error(event: Event) -> None:
    raise RuntimeError("bad byte \x00 in the reply")


async def short(event: Event) -> None:
    """Marks its start with this process's pid and takes 0.2 s."""
    async with await psycopg.AsyncConnection.connect(os.environ["PGOBS_DSN"], autocommit=True) as c:
        await c.execute(
            "INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid())
        )
        await asyncio.sleep(0.2)


async def block_loop(event: Event) -> None:
    """A user's mistake: a blocking call in an async handler. Records its start, then holds the
    worker's event loop until the file named by PGOBS_TEST_RELEASE exists (at most 100 s)."""
    with psycopg.connect(os.environ["PGOBS_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid()))
    release = os.environ["PGOBS_TEST_RELEASE"]
    deadline = time.monotonic() + 100
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
