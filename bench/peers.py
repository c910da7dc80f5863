"""Peer benchmarks: pgqueuer and procrastinate draining no-op jobs, and pgqueuer's
enqueue-to-start latency.

Each burn-down creates a throwaway database, installs the library's schema in it,
enqueues ``jobs`` no-op jobs in bulk (not timed), then times how long the library's
own in-process worker takes to drain them. The latency run enqueues single jobs at a
steady rate while a pgqueuer worker process consumes them. The database is dropped
afterwards, also on failure. Every run is bounded by ``TIMEOUT_S`` so a hang cannot
stall CI.

Usage::

    python bench/peers.py --jobs 30000 --latency-seconds 10 \
        --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships neither py.typed nor stubs
from percentiles import summarize

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 300.0
ENQUEUE_CHUNK = 10_000
PGQUEUER_DB = "pgobs_bench_pgqueuer"
PGQUEUER_LATENCY_DB = "pgobs_bench_pgqueuer_latency"
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


# The consumer's lines on stdout that the parent reads; anything else there is its log.
_READY = "pgqueuer-latency: ready"
_REPORT = "pgqueuer-latency: report "


async def _consumer_line(consumer: asyncio.subprocess.Process, prefix: str, log: list[str]) -> str:
    """The rest of the consumer's next stdout line starting with ``prefix``; other lines are
    kept in ``log`` for the error if the consumer exits first."""
    assert consumer.stdout is not None
    while True:
        line = (await consumer.stdout.readline()).decode()
        if not line:
            await consumer.wait()
            raise RuntimeError(
                f"pgqueuer consumer exited with {consumer.returncode}: {''.join(log)[-2000:]}"
            )
        if line.startswith(prefix):
            return line[len(prefix) :]
        log.append(line)


async def pgqueuer_latency(
    admin_dsn: str, rate: int = 200, seconds: float = 10
) -> dict[str, float]:
    """Enqueue ``rate`` single pgqueuer jobs per second for ``seconds``; return the
    enqueue-sent-to-entrypoint-start latency as p50/p99/max in ms (``percentiles``).

    The consumer is a separate process (``_pgqueuer_latency_consumer``), as pgobs's worker
    is in ``pgobs_bench.bench_latency``: in-process it would share one event loop and GIL
    with the producer, so its latency would measure the producer's scheduling too, and
    neither queue runs that way in production. Configuration as in the burn-down (asyncpg
    driver, ``batch_size=100``); every job's send time rides in its payload and the
    entrypoint records ``time.time() - sent`` first thing. One warm-up job must reach the
    entrypoint before the timed enqueues begin, as pgobs's warm-up row does.
    """
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    total = int(rate * seconds)
    if total <= 0:
        raise ValueError("rate * seconds must be at least one job")
    _quiet_libraries()

    async with asyncio.timeout(TIMEOUT_S), _fresh_database(admin_dsn, PGQUEUER_LATENCY_DB) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            await queries.install()
            consumer = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", _CONSUMER_MAIN, dsn, str(total)),
                env={**os.environ, "PYTHONPATH": str(HERE)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                limit=2**24,  # the report is one line of every latency
            )
            log: list[str] = []
            reported: asyncio.Task[str] | None = None
            try:
                await queries.enqueue("warmup", None)
                async with asyncio.timeout(60):
                    await _consumer_line(consumer, _READY, log)
                # Reads the consumer's output while we enqueue, so its pipe never fills.
                reported = asyncio.create_task(_consumer_line(consumer, _REPORT, log))
                interval = 1 / rate
                next_at = time.perf_counter()
                for _ in range(total):
                    if reported.done():  # the consumer died: its error is raised below
                        break
                    next_at += interval
                    await queries.enqueue("latency", json.dumps({"sent": time.time()}).encode())
                    pause = next_at - time.perf_counter()
                    if pause > 0:
                        await asyncio.sleep(pause)
                async with asyncio.timeout(60):
                    report = json.loads(await reported)
            finally:
                if reported is not None:
                    reported.cancel()
                # After its report the consumer stops by itself; otherwise stop it.
                with contextlib.suppress(ProcessLookupError):
                    consumer.terminate()
                try:
                    async with asyncio.timeout(20):
                        await consumer.wait()
                except TimeoutError:
                    consumer.kill()
                    await consumer.wait()
        finally:
            await conn.close()
    return summarize(report)


# Run by ``pgqueuer_latency`` as ``python -c _CONSUMER_MAIN dsn total``.
_CONSUMER_MAIN = (
    "import asyncio, sys, peers; "
    "asyncio.run(peers._pgqueuer_latency_consumer(sys.argv[1], int(sys.argv[2])))"
)


async def _pgqueuer_latency_consumer(dsn: str, total: int) -> None:
    """A pgqueuer ``QueueManager`` that says when the warm-up job has run, records each
    ``latency`` job's start minus its send time, prints them after ``total`` and stops."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    _quiet_libraries()
    conn = await asyncpg.connect(dsn)
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        latencies: list[float] = []

        @qm.entrypoint("warmup")
        async def warmup(job: Job) -> None:
            print(_READY, flush=True)

        @qm.entrypoint("latency")
        async def latency(job: Job) -> None:
            started = time.time()
            latencies.append(started - json.loads(job.payload or b"{}")["sent"])
            if len(latencies) == total:
                print(_REPORT + json.dumps(latencies), flush=True)
                qm.shutdown.set()

        async with asyncio.timeout(TIMEOUT_S):
            await qm.run(batch_size=PGQUEUER_BATCH_SIZE)
    finally:
        await conn.close()


async def _main(dsn: str, jobs: int, latency_seconds: float) -> None:
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
    lat = await pgqueuer_latency(dsn, seconds=latency_seconds)
    print(
        f"pgqueuer enqueue-to-start latency, 200 jobs/s for {latency_seconds:g} s: "
        f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args.dsn, args.jobs, args.latency_seconds))


if __name__ == "__main__":
    main()
