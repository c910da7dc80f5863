"""pgobs.run_maintenance() over 1,000,000 expired events, with a writer and the listener at work.

Run: ``PGOBS_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres
python bench/bench_maintenance.py [--events 1000000] [--batch-size 10000] [--backlog 0]``

``--backlog N`` queues N jobs for N recent events first (workers down for a while): the expired
events are checked against that queue (0016 reads it once per run, not once per batch).

A database of its own gets the expired events (already fanned out: the listener's checkpoint
has passed them) and a tracked table. While maintenance removes them, a writer commits an order
every 5 ms and the listener fans each one out into a job; the bench reports how long the run
took and the longest a writer's commit and an event's way to its job took, beside the same
measures taken for a few seconds before, with nothing else running. Maintenance deletes rows no
writer or listener ever locks, so neither should wait on it at all, let alone a whole batch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgobs.db.migrate import migrate

CONFIG = """
observers:
  - name: orders
    entity: Order
    actions: [{type: log}]
"""
BASELINE_S = 5.0
WRITE_EVERY_S = 0.005


@dataclass
class Probe:
    """A writer committing one order at a time, and a poller noting when each one's job
    appears: commit latency and fan-out latency, kept per phase."""

    dsn: str
    phase: str = "baseline"
    commits: dict[str, list[float]] = field(default_factory=dict)
    fanouts: dict[str, list[float]] = field(default_factory=dict)
    _committed: dict[int, tuple[float, str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._write), threading.Thread(target=self._poll)]
        for t in threads:
            t.start()
        return threads

    def stop(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(timeout=30)

    def _write(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            number = 0
            while not self._stop.is_set():
                number += 1
                phase = self.phase
                started = time.monotonic()
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (number,))
                done = time.monotonic()
                with self._lock:
                    self._committed[number] = (done, phase)
                    self.commits.setdefault(phase, []).append(done - started)
                time.sleep(WRITE_EVERY_S)

    def _poll(self) -> None:
        last_job = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT j.id, e.entity_id::bigint FROM pgobs.jobs j "
                    "JOIN pgobs.events e ON e.id = j.event_id WHERE j.id > %s ORDER BY j.id",
                    (last_job,),
                ).fetchall()
                seen = time.monotonic()
                with self._lock:
                    for job_id, number in rows:
                        last_job = max(last_job, job_id)
                        committed, phase = self._committed.pop(number, (seen, self.phase))
                        self.fanouts.setdefault(phase, []).append(seen - committed)
                time.sleep(0.002)


def longest(values: list[float]) -> str:
    return f"{max(values) * 1000:.0f} ms" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=0, help="jobs queued for recent events")
    args = parser.parse_args()
    admin = os.environ.get("PGOBS_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"pgobs_bench_maint_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    listener: subprocess.Popen[bytes] | None = None
    try:
        anyio.run(lambda: migrate(dsn))
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY)")
            conn.execute("SELECT pgobs.track('orders', 'Order')")
            conn.execute(
                "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data, created_at) "
                "SELECT 'Archived', g::text, 'INSERT', jsonb_build_object('id', g, 'note', "
                "'an order of last week'), now() - interval '8 days' "
                "FROM generate_series(1, %s) AS g",
                (args.events,),
            )
            conn.execute(
                "WITH recent AS (INSERT INTO pgobs.events (entity_type, entity_id, event_type, "
                "data) SELECT 'Waiting', g::text, 'INSERT', '{}' FROM generate_series(1, %s) AS g "
                "RETURNING id) INSERT INTO pgobs.jobs (event_id, observer, action, action_index, "
                "action_type) SELECT id, 'orders', 'log', 0, 'log' FROM recent",
                (args.backlog,),
            )
            conn.execute("VACUUM ANALYZE pgobs.jobs")
            # Where the listener's checkpoint stands once it has fanned all of them out.
            conn.execute(
                "INSERT INTO pgobs.checkpoints (listener_id, snapshot) "
                "VALUES ('default', pg_current_snapshot())"
            )
            conn.execute("VACUUM ANALYZE pgobs.events")
        print(
            f"setup: {args.events:,} expired events, {args.backlog:,} jobs queued, in "
            f"{time.monotonic() - started:.1f}s"
        )

        config = Path(tempfile.mkdtemp(prefix="pgobs-bench-")) / "observers.yaml"
        config.write_text(CONFIG)
        listener = subprocess.Popen(
            [sys.executable, "-m", "pgobs", "worker", "--role", "listener", "--config",
             str(config)],
            env={**os.environ, "PGOBS_DSN": dsn},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while not conn.execute(
                "SELECT count(*) FROM pgobs.listeners WHERE is_leader"
            ).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise SystemExit("the listener did not lead within 30 s")
                time.sleep(0.1)

        probe = Probe(dsn)
        threads = probe.start()
        try:
            time.sleep(BASELINE_S)
            probe.phase = "maintenance"
            with psycopg.connect(dsn, autocommit=True) as conn:
                run_started = time.monotonic()
                row = conn.execute(
                    "SELECT events FROM pgobs.run_maintenance(false, %s)", (args.batch_size,)
                ).fetchone()
                took = time.monotonic() - run_started
            probe.phase = "after"
            time.sleep(1.0)
        finally:
            probe.stop(threads)
        removed = int(row[0]) if row else 0
        batches = max(1, -(-removed // args.batch_size))
        print(
            f"run_maintenance(): removed {removed:,} events in {took:.1f}s "
            f"({removed / took:,.0f}/s), {batches} batches of {args.batch_size:,}, "
            f"{took / batches * 1000:.0f} ms per batch"
        )
        for phase in ("baseline", "maintenance"):
            print(
                f"  {phase:<11}  writer commits: {len(probe.commits.get(phase, [])):>5}, "
                f"longest {longest(probe.commits.get(phase, []))};  "
                f"listener fan-outs: {len(probe.fanouts.get(phase, [])):>5}, "
                f"longest {longest(probe.fanouts.get(phase, []))}"
            )
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=20)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
