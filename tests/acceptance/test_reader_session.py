"""The listener's reader session (the next batch is read on a session of its own while the
leader's session writes this one), as an adversarial review tried it: killed again and again,
stuck behind a lock, refused a connection on taking the lead, frozen with its leader."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support import (
    CANDIDATES,
    KILL_READERS,
    READERS,
    Worker,
    execute,
    leader_pid,
    scalar,
    wait_until,
)

CONFIG = """
observers:
  - name: obs-all
    entity: Order
    actions: [{type: log}]
"""


def writer(dsn: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            conn.execute(
                "INSERT INTO orders (kind) SELECT 'a' FROM generate_series(1, %s)",
                (rng.randint(1, 20),),
            )
            if rng.random() < 0.1:
                conn.rollback()
            else:
                conn.commit()


def _setup(dsn: str, tmp_path: Path) -> Path:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, kind text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    return config


@pytest.mark.timeout(120)
def settle(dsn: str, stop: threading.Event, writers: list[threading.Thread]) -> int:
    """Stop the writers, wait until every committed event has its job and the leader holds one
    reader session; returns how many events were committed."""
    stop.set()
    for w in writers:
        w.join(timeout=10)
    committed = int(scalar(dsn, "SELECT count(*) FROM pgobs.events"))
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == committed, timeout=30)
    wait_until(lambda: scalar(dsn, READERS) == 1, timeout=10)  # a settled leader: one reader
    return committed


def test_terminating_the_reader_again_and_again_loses_and_doubles_nothing(
    dsn: str, tmp_path: Path
) -> None:
    config = _setup(dsn, tmp_path)
    args = ("--role", "listener", "--config", str(config), "--batch-size", "50")
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(dsn, stop, i)) for i in range(6)]
    rng = random.Random(11)
    killed = 0
    try:
        wait_until(lambda: leader_pid(dsn))
        for w in writers:
            w.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.15))
            killed += scalar(dsn, KILL_READERS)
            # never more than one reader per process
            assert scalar(dsn, READERS) <= len(procs)
        committed = settle(dsn, stop, writers)
    finally:
        stop.set()
        for p in procs:
            p.stop()
    assert killed > 5
    assert committed > 500
    missing = scalar(
        dsn,
        "SELECT count(*) FROM pgobs.events e WHERE NOT EXISTS "
        "(SELECT FROM pgobs.jobs j WHERE j.event_id = e.id)",
    )
    assert missing == 0
    wait_until(lambda: scalar(dsn, READERS) == 0, timeout=10)


@pytest.mark.timeout(90)
def test_a_read_waiting_on_a_lock_does_not_get_a_live_leader_fenced(
    dsn: str, tmp_path: Path
) -> None:
    """Before 900ba3e the read ran on the leader's own session: a read waiting on a lock showed
    wait_event_type 'Lock' there, and fence_stale_leader leaves a busy session alone. Now the
    leader's session sits idle ('Client') while its reader waits, and the beat goes stale."""
    config = _setup(dsn, tmp_path)
    args = ("--role", "listener", "--config", str(config))
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    try:
        first = wait_until(lambda: leader_pid(dsn))
        execute(dsn, "INSERT INTO orders (kind) SELECT 'a' FROM generate_series(1, 10)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 10)
        wait_until(lambda: scalar(dsn, CANDIDATES) == 2)
        # Someone holds an ACCESS EXCLUSIVE lock on the events for 4 s (less than the listener's
        # lock_timeout of 5 s; more than leader_stale_s of 3 s): a DDL, a partition change.
        with psycopg.connect(dsn) as hostile:
            hostile.execute("LOCK TABLE pgobs.events IN ACCESS EXCLUSIVE MODE")
            time.sleep(4.0)
            hostile.commit()
        execute(dsn, "INSERT INTO orders (kind) SELECT 'a' FROM generate_series(1, 10)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 20, timeout=20)
        now = leader_pid(dsn)
    finally:
        for p in procs:
            p.stop()
    logs = "".join(p.output() for p in procs)
    assert "ended its session" not in logs, "a live leader was fenced"
    assert "lost its session" not in logs
    assert now == first


@pytest.mark.timeout(90)
def test_a_standby_that_cannot_open_its_reader_when_it_takes_over_does_not_end_the_worker(
    dsn: str, tmp_path: Path
) -> None:
    """Taking over now needs a new connection (the reader). connect() raises ConnectionFailed, a
    PgobsError that _candidate_loop does not catch: the listener fails, and with it the process
    (jobs pool included). Before 900ba3e a standby led on the session it already had."""
    config = _setup(dsn, tmp_path)
    args = ("--role", "listener", "--config", str(config))
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    database = scalar(dsn, "SELECT current_database()")
    # ALTER DATABASE may not disallow connections to the database it runs in; the session that
    # ends the leader's is the test database's own, opened before they are disallowed.
    admin = psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True)
    own = psycopg.connect(dsn, autocommit=True)
    try:
        first = wait_until(lambda: leader_pid(dsn))
        wait_until(lambda: scalar(dsn, CANDIDATES) == 2)
        standby = next(p for p in procs if p.pid != first)
        # A moment when no new session can be opened (max_connections reached, a role's
        # connection limit, a restarting pooler): the standby's own session is up already.
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            own.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                (f"pgobs listener default pid {first}",),
            )
            time.sleep(2.0)
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        time.sleep(1.0)
        assert standby.proc.poll() is None, f"the standby exited:\n{standby.output()[-2000:]}"
        execute(dsn, "INSERT INTO orders (kind) SELECT 'a' FROM generate_series(1, 10)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 10, timeout=20)
    finally:
        own.close()
        admin.close()
        for p in procs:
            p.stop()


@pytest.mark.timeout(90)
def test_a_frozen_leader_under_load_is_fenced_and_its_reader_closes_when_it_thaws(
    dsn: str, tmp_path: Path
) -> None:
    config = _setup(dsn, tmp_path)
    args = ("--role", "listener", "--config", str(config), "--batch-size", "500")
    procs = [Worker(dsn, *args, log_path=tmp_path / f"l{i}.log") for i in range(2)]
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(dsn, stop, i)) for i in range(6)]
    try:
        first = wait_until(lambda: leader_pid(dsn))
        for w in writers:
            w.start()
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") > 3000, timeout=30)
        os.kill(first, signal.SIGSTOP)
        try:
            wait_until(lambda: (p := leader_pid(dsn)) and p != first, timeout=15)
            assert scalar(dsn, READERS) == 2  # the frozen one's, and the new leader's
        finally:
            os.kill(first, signal.SIGCONT)
        settle(dsn, stop, writers)
    finally:
        stop.set()
        for p in procs:
            p.stop()
    wait_until(lambda: scalar(dsn, READERS) == 0, timeout=10)
