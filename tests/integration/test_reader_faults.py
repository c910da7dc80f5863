"""Read-ahead on the reader session, with small batches, a byte budget cut by big
rows, transactions that stay open across batches and commit out of txid order, and the reader
session terminated again and again."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from tests.inprocess import InProcessListener
from tests.support import KILL_READERS, READERS, execute, scalar, wait_until

ONCE = "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)"
JOBS = "SELECT count(*) FROM pgobs.jobs"
EVENTS = "SELECT count(*) FROM pgobs.events"


def write(dsn: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            for _ in range(rng.randint(1, 4)):
                # rows from 10 bytes to ~40 kB of barely compressible text
                conn.execute(
                    "INSERT INTO orders (note) SELECT string_agg(md5(random()::text), '') "
                    "FROM generate_series(1, %s)",
                    (rng.choice([1, 1, 1, 50, 1200]),),
                )
            # some stay open across several batches, so commits land out of txid order
            time.sleep(rng.choice([0, 0, 0, 0.05, 0.4, 1.2]))
            if rng.random() < 0.1:
                conn.rollback()
            else:
                conn.commit()


def kill(dsn: str, stop: threading.Event, killed: list[int]) -> None:
    rng = random.Random(99)
    while not stop.is_set():
        time.sleep(rng.uniform(0.02, 0.3))
        killed.append(scalar(dsn, KILL_READERS))


@pytest.mark.timeout(180)
def test_reader_killed_under_byte_budget_and_open_transactions_loses_and_doubles_nothing(
    dsn: str,
) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, note text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, ONCE)
    stop = threading.Event()
    stop_killing = threading.Event()
    killed: list[int] = []
    writers = [threading.Thread(target=write, args=(dsn, stop, i)) for i in range(5)]
    killer = threading.Thread(target=kill, args=(dsn, stop_killing, killed))
    with psycopg.connect(dsn) as held:
        held.execute("INSERT INTO orders (note) VALUES ('held')")  # open throughout
        try:
            with InProcessListener(
                dsn, batch_size=7, batch_bytes=60_000, poll_interval_s=0.05, leader_stale_s=2.0
            ):
                for w in writers:
                    w.start()
                killer.start()
                time.sleep(12)
                stop.set()
                for w in writers:
                    w.join(10)
                stop_killing.set()
                killer.join(10)
                held.commit()
                wait_until(lambda: scalar(dsn, JOBS) == scalar(dsn, EVENTS), timeout=60)
                assert scalar(dsn, READERS) == 1
        finally:
            stop.set()
            stop_killing.set()
    assert sum(killed) > 10
    assert scalar(dsn, EVENTS) > 300
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail WHERE kind = 'event'") == scalar(
        dsn, EVENTS
    )
    assert (
        scalar(
            dsn,
            "SELECT count(*) FROM pgobs.events e WHERE NOT EXISTS "
            "(SELECT FROM pgobs.jobs j WHERE j.event_id = e.id)",
        )
        == 0
    )
    wait_until(lambda: scalar(dsn, READERS) == 0, timeout=10)
