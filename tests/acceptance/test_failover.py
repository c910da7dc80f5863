"""Crash safety: SIGKILL or SIGSTOP the leader while 8 writers insert; a standby takes over and
every committed event is fanned out exactly once."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support import CANDIDATES, Worker, execute, leader_pid, scalar, wait_until

CONFIG = """
observers:
  - name: obs-all
    entity: Order
    actions: [{type: log}]
  - name: obs-b
    entity: Order
    condition: "kind == 'b'"
    actions: [{type: log, name: first}, {type: log, name: second}]
"""


def writer(dsn: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            rows = rng.randint(1, 5)
            kinds = [rng.choice("ab") for _ in range(rows)]
            conn.execute("INSERT INTO orders (kind) SELECT unnest(%s::text[])", (kinds,))
            if rng.random() < 0.15:
                conn.rollback()
            else:
                conn.commit()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_leader_repeatedly_loses_and_duplicates_nothing(
    dsn: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, kind text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    # The proof: a second fan-out of any event × observer × action would violate this.
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    args = ("--role", "listener", "--config", str(config), "--batch-size", "50")
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(dsn, stop, i)) for i in range(8)]
    takeovers: list[float] = []
    rng = random.Random(7)
    try:
        wait_until(lambda: leader_pid(dsn))
        for w in writers:
            w.start()
        for round_ in range(6):
            time.sleep(rng.uniform(0.2, 0.8))
            # A warm standby must be connected, so the number measures failover, not start-up.
            wait_until(lambda: scalar(dsn, CANDIDATES) >= 2)
            victim = wait_until(lambda: leader_pid(dsn))
            doomed = next(p for p in procs if p.pid == victim)
            doomed.kill()
            killed_at = time.monotonic()
            # The bound is "a standby takes over at all": the README's target is about 1 s, and
            # the measured time is reported below, not asserted, as load on a shared machine
            # stretches it well past the 0.25 s it takes on an idle one.
            new = wait_until(lambda v=victim: (p := leader_pid(dsn)) and p != v and p, timeout=10)
            takeovers.append(time.monotonic() - killed_at)
            assert new != victim
            procs.append(Worker(dsn, *args, log_path=tmp_path / f"l{round_ + 2}.log"))
        stop.set()
        for w in writers:
            w.join(timeout=10)
        committed = scalar(dsn, "SELECT count(*) FROM pgobs.events")
        wait_until(
            lambda: (
                scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-all'")
                == committed
            ),
            timeout=30,
        )
    finally:
        stop.set()
        for p in procs:
            p.stop()
    expected_b = scalar(dsn, "SELECT count(*) FROM pgobs.events WHERE data->>'kind' = 'b'")
    assert committed > 100
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-b'") == 2 * expected_b
    orphans = (
        "SELECT count(*) FROM pgobs.jobs j LEFT JOIN pgobs.events e ON e.id = j.event_id "
        "WHERE e.id IS NULL"
    )
    assert scalar(dsn, orphans) == 0
    record_property(
        "takeover after SIGKILL",
        f"max {max(takeovers):.3f}s, mean {sum(takeovers) / len(takeovers):.3f}s over "
        f"{len(takeovers)} kills, {committed} committed events fanned out exactly once",
    )


def test_a_leader_whose_session_is_killed_steps_down_and_nothing_is_lost(
    dsn: str, tmp_path: Path
) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, kind text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    args = ("--role", "listener", "--config", str(config))
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    try:
        first = wait_until(lambda: leader_pid(dsn))
        for round_ in range(3):
            execute(dsn, "INSERT INTO orders (kind) SELECT 'b' FROM generate_series(1, 50)")
            execute(
                dsn,
                "SELECT pg_terminate_backend(a.pid) "
                "FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid IN ("
                "SELECT l.pid FROM pg_locks l WHERE l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) AND l.locktype = 'advisory' "
                "AND l.classid = 2024061501)",
            )
            execute(dsn, "INSERT INTO orders (kind) SELECT 'a' FROM generate_series(1, 50)")
            wait_until(
                lambda r=round_: (
                    scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-all'")
                    == 100 * (r + 1)
                )
            )
        assert all(p.proc.poll() is None for p in procs)  # the processes live on
        assert first is not None
        assert "lost its session" in "".join(p.output() for p in procs)
    finally:
        for p in procs:
            p.stop()
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-b'") == 2 * 150


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_frozen_leader_is_fenced_out_and_stands_by_when_it_thaws(
    dsn: str, tmp_path: Path
) -> None:
    """kill -STOP keeps the leader's session (and its lock) alive: the standby must see its
    heartbeat go stale, end that session and lead. Thawed, the old leader must stand by."""
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, kind text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    args = ("--role", "listener", "--config", str(config), "--batch-size", "50")
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(dsn, stop, i)) for i in range(8)]
    frozen: Worker | None = None
    fanned_out = "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-all'"
    try:
        wait_until(lambda: scalar(dsn, CANDIDATES) >= 2)
        victim = wait_until(lambda: leader_pid(dsn))
        frozen = next(p for p in procs if p.pid == victim)
        for w in writers:
            w.start()
        # Waits on fan-out are generous: another database's long transaction on a shared server
        # holds it back (issue 8, finding 1).
        wait_until(lambda: scalar(dsn, fanned_out) > 100, timeout=60)
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        new = wait_until(lambda: (p := leader_pid(dsn)) and p != victim and p, timeout=60)
        takeover = time.monotonic() - stopped_at
        # Fan-out goes on while the old leader stays frozen.
        before = scalar(dsn, fanned_out)
        wait_until(lambda: scalar(dsn, fanned_out) > before + 100, timeout=60)
        os.kill(victim, signal.SIGCONT)
        wait_until(lambda: "lost its session" in frozen.output())
        wait_until(lambda: scalar(dsn, CANDIDATES) >= 2)  # back, as a standby
        stop.set()
        for w in writers:
            w.join(timeout=10)
        committed = scalar(dsn, "SELECT count(*) FROM pgobs.events")
        wait_until(lambda: scalar(dsn, fanned_out) == committed, timeout=60)
        assert leader_pid(dsn) == new
        assert frozen.proc.poll() is None
    finally:
        stop.set()
        for p in procs:
            if p.proc.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
            p.stop()
    expected_b = scalar(dsn, "SELECT count(*) FROM pgobs.events WHERE data->>'kind' = 'b'")
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-b'") == 2 * expected_b
    print(f"\ntakeover after SIGSTOP: {takeover:.2f}s; {committed} events fanned out exactly once")
    # The bar is "a few seconds"; the default fence is 3 s of silence plus a 0.25 s retry.
    # The limit is generous so that a loaded 2-core machine does not break it.
    assert takeover < 15
