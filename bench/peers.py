"""Peer burndown benchmarks: pgqueuer and procrastinate draining no-op jobs.

Each function creates a throwaway database, installs the library's schema in it,
enqueues ``jobs`` no-op jobs in bulk (not timed), then times how long the library's
own in-process worker takes to drain them. The database is dropped afterwards, also
on failure. Every run is bounded by ``TIMEOUT_S`` so a hang cannot stall CI.

Usage::

    python bench/peers.py --jobs 30000 --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships neither py.typed nor stubs

TIMEOUT_S = 300.0
ENQUEUE_CHUNK = 10_000
PGQUEUER_DB = "pgobs_bench_pgqueuer"
PROCRASTINATE_DB = "pgobs_bench_procrastinate"
PGQUEUER_BATCH_SIZE = 100
PROCRASTINATE_CONCURRENCY = 32

_LIBRARY_LOGGERS = ("pgqueuer", "procrastinate")


def _quiet_libraries() -> None:
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Warns on every run when this file is executed as __main__ (the no-op task then
    # lives in module "__main__"); harmless here, so keep it out of the table output.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    """Return ``admin_dsn`` with its database replaced by ``dbname`` (query string kept)."""
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _drop_database(admin_dsn: str, dbname: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(dbname)} WITH (FORCE)")
    finally:
        await conn.close()


@asynccontextmanager
async def _fresh_database(admin_dsn: str, dbname: str) -> AsyncIterator[str]:
    """Create ``dbname`` (dropping any leftover first), yield its DSN, always drop it."""
    await _drop_database(admin_dsn, dbname)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(dbname)}")
    finally:
        await conn.close()
    try:
        yield _dsn_for(admin_dsn, dbname)
    finally:
        # Shielded so a timeout/cancel of the caller still cleans up.
        await asyncio.shield(_drop_database(admin_dsn, dbname))


async def pgqueuer_burndown(admin_dsn: str, jobs: int = 30_000) -> float:
    """Drain ``jobs`` no-op pgqueuer jobs with one in-process ``QueueManager``; return jobs/s.

    Configuration: asyncpg single-connection driver, ``batch_size=100``, no
    ``max_concurrent_tasks`` cap (pgqueuer's default, i.e. unlimited), default
    (logged) table durability. Timing runs from just before ``QueueManager.run()``
    to the moment the entrypoint has been called for the last job.
    """
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    if jobs <= 0:
        raise ValueError("jobs must be positive")
    _quiet_libraries()

    async with asyncio.timeout(TIMEOUT_S), _fresh_database(admin_dsn, PGQUEUER_DB) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            await queries.install()

            for start in range(0, jobs, ENQUEUE_CHUNK):
                n = min(ENQUEUE_CHUNK, jobs - start)
                await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
            # Fresh table, and autovacuum may be off: give the planner real statistics.
            await conn.execute("ANALYZE")

            qm = QueueManager(queries)
            done = 0
            finished_at = 0.0

            @qm.entrypoint("noop")
            async def noop(job: Job) -> None:
                nonlocal done, finished_at
                done += 1
                if done == jobs:
                    finished_at = time.perf_counter()
                    qm.shutdown.set()

            started_at = time.perf_counter()
            await qm.run(batch_size=PGQUEUER_BATCH_SIZE)

            if done != jobs:
                raise RuntimeError(f"pgqueuer ran {done} of {jobs} jobs")
            # run() flushes its status-log buffer on exit; every job must have left the queue.
            left = await conn.fetchval(
                f"SELECT count(*) FROM {_quote_ident(queries.qbe.settings.queue_table)}"
            )
            if left:
                raise RuntimeError(f"pgqueuer left {left} jobs in its queue table")
        finally:
            await conn.close()

    return jobs / (finished_at - started_at)


async def procrastinate_burndown(admin_dsn: str, jobs: int = 30_000) -> float:
    """Drain ``jobs`` no-op procrastinate jobs with ``run_worker_async``; return jobs/s.

    Configuration: ``PsycopgConnector`` (psycopg pool min 4 / max concurrency + 4,
    so in-flight jobs never queue for a connection; LISTEN uses its own connection),
    worker ``concurrency=32``, ``wait=False`` so the worker returns once the queue is
    empty and in-flight jobs have finished, default ``delete_jobs="never"`` (finished
    rows stay with status ``succeeded``). Timing is the duration of ``run_worker_async``.
    """
    from procrastinate import App, PsycopgConnector

    if jobs <= 0:
        raise ValueError("jobs must be positive")
    _quiet_libraries()

    async with asyncio.timeout(TIMEOUT_S), _fresh_database(admin_dsn, PROCRASTINATE_DB) as dsn:
        connector = PsycopgConnector(
            conninfo=dsn,
            min_size=4,
            max_size=PROCRASTINATE_CONCURRENCY + 4,
        )
        app = App(connector=connector)
        done = 0

        @app.task(name="noop")
        async def noop() -> None:
            nonlocal done
            done += 1

        async with app.open_async():
            await app.schema_manager.apply_schema_async()

            for start in range(0, jobs, ENQUEUE_CHUNK):
                n = min(ENQUEUE_CHUNK, jobs - start)
                await noop.batch_defer_async(*({} for _ in range(n)))
            # Without statistics procrastinate_fetch_job_v2 plans badly on a fresh
            # table (~2x slower) until autovacuum, which may be off, analyzes it.
            await connector.execute_query_async("ANALYZE")

            started_at = time.perf_counter()
            await app.run_worker_async(
                concurrency=PROCRASTINATE_CONCURRENCY,
                wait=False,
                install_signal_handlers=False,
            )
            finished_at = time.perf_counter()

            if done != jobs:
                raise RuntimeError(f"procrastinate ran {done} of {jobs} jobs")
            succeeded = await connector.execute_query_one_async(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            if succeeded["n"] != jobs:
                raise RuntimeError(f"procrastinate marked {succeeded['n']} of {jobs} succeeded")

    return jobs / (finished_at - started_at)


async def _main(dsn: str, jobs: int) -> None:
    results: list[tuple[str, float, float]] = []
    for name, fn in (
        ("pgqueuer", pgqueuer_burndown),
        ("procrastinate", procrastinate_burndown),
    ):
        wall_start = time.perf_counter()
        rate = await fn(dsn, jobs)
        results.append((name, rate, time.perf_counter() - wall_start))

    print(f"{'peer':<14} {'jobs':>8} {'jobs/s':>10} {'wall s':>8}")
    for name, rate, wall in results:
        print(f"{name:<14} {jobs:>8} {rate:>10,.0f} {wall:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args.dsn, args.jobs))


if __name__ == "__main__":
    main()
