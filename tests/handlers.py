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


async def gated(event: Event) -> None:
    """Marks its start with this process's pid, then waits (at most 30 s) until the test puts a
    row in table gate: work that lasts exactly as long as the test needs."""
    async with await psycopg.AsyncConnection.connect(os.environ["PGOBS_DSN"], autocommit=True) as c:
        await c.execute(
            "INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid())
        )
        for _ in range(600):
            cur = await c.execute("SELECT EXISTS (SELECT FROM gate)")
            if (await cur.fetchone()) == (True,):
                return
            await asyncio.sleep(0.05)


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


async def noop(event: Event) -> None:
    """Does nothing: what a worker costs is then its own."""


def record_total(event: Event) -> None:
    """Records the Python type and text of ``data['total']`` as the handler received it."""
    total = (event.data or {}).get("total")
    with psycopg.connect(os.environ["PGOBS_DSN"]) as conn:
        conn.execute(
            "INSERT INTO handled (event_id, how) VALUES (%s, %s)",
            (event.id, f"{type(total).__name__} {total}"),
        )


async def block_loop(event: Event) -> None:
    """A user's mistake: a blocking call in an async handler. Records its start, then holds the
    worker's event loop until the file named by PGOBS_TEST_RELEASE exists (at most 100 s)."""
    with psycopg.connect(os.environ["PGOBS_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid()))
    release = os.environ["PGOBS_TEST_RELEASE"]
    deadline = time.monotonic() + 100
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


def hang_sync(event: Event) -> None:
    """A plain def handler that never comes back (as far as any test waits)."""
    with psycopg.connect(os.environ["PGOBS_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO starts (event_id, pid) VALUES (%s, %s)", (event.id, os.getpid()))
    time.sleep(3600)


async def enriched(event: Event) -> None:
    """Records what the lookups gave it, and a value of its own kept in ``pgobs.cache``."""
    import pgobs

    customer = (event.enrich or {})["customer"]
    calls = []

    def tier() -> dict[str, str]:
        calls.append(1)
        return {"tier": "gold"}

    kept = await pgobs.cache.get_or_set(f"tier:{customer['id']}", tier, ttl_s=60)
    async with await psycopg.AsyncConnection.connect(os.environ["PGOBS_DSN"]) as conn:
        await conn.execute(
            "INSERT INTO handled (event_id, how) VALUES (%s, %s)",
            (event.id, f"{customer['name']}/{kept['tier']}"),
        )
