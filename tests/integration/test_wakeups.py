"""Wake-ups (issue 7, finding 7a): an event written while the leader is busy and committed once
it is idle is not left for the poll interval; and no writer notifies once no listener runs."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.inprocess import InProcessListener
from tests.support import Worker, execute, scalar, wait_until

POLL_S = 30.0  # any wait for the poll shows as a timeout below
PROMPT_S = 5.0  # generous for a loaded machine, and far below the poll interval
SILENT = (
    "SELECT count(*) FROM pg_locks WHERE database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) AND pid = pg_backend_pid() "
    "AND locktype = 'advisory' AND classid = 2024061502 AND mode = 'ShareLock' AND granted"
)
FLOOD_JOBS = (
    "SELECT count(*) FROM pgobs.jobs j JOIN pgobs.events e ON e.id = j.event_id "
    "WHERE e.data->>'status' = 'flood'"
)


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def notifications_before_marker(dsn: str, write: str) -> list[str]:
    """Payloads on pgobs_events from ``write``, up to a marker sent after it (commit order)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgobs_events")
        execute(dsn, write)
        execute(dsn, "NOTIFY pgobs_events, 'marker'")
        got = []
        for note in listener.notifies(timeout=5):
            if note.payload == "marker":
                return got
            got.append(note.payload)
    raise AssertionError("the marker never arrived")


def job_for(dsn: str, event_id: int) -> bool:
    return bool(scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE event_id = %s", (event_id,)))


def flood(dsn: str, stop: threading.Event) -> None:
    """Keep the leader busy: batches of 50 events, transaction after transaction."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            conn.execute("INSERT INTO orders (status) SELECT 'flood' FROM generate_series(1, 50)")


def race(
    dsn: str, racers: int, idle_s: tuple[float, float], rng: random.Random
) -> tuple[list[float], int]:
    """Racers write while the leader reads a flood, and commit once it has gone idle; returns
    how long each committed event took to be fanned out, and how many racers skipped NOTIFY."""
    stop = threading.Event()
    writer = threading.Thread(target=flood, args=(dsn, stop))
    conns = [psycopg.connect(dsn) for _ in range(racers)]
    latencies = []
    silent = 0
    try:
        before = scalar(dsn, FLOOD_JOBS)
        writer.start()
        wait_until(lambda: scalar(dsn, FLOOD_JOBS) > before + 200)  # the leader reads on
        written = []
        for conn in conns:
            time.sleep(rng.uniform(0.0, 0.05))
            row = conn.execute("INSERT INTO orders (status) VALUES ('racer') RETURNING id")
            assert row.fetchone()
            event = conn.execute("SELECT max(id) FROM pgobs.events").fetchone()
            held = conn.execute(SILENT).fetchone()
            assert event and held
            silent += int(held[0])
            written.append((conn, int(event[0])))
        stop.set()
        writer.join(10)
        flooded = "SELECT count(*) FROM pgobs.events WHERE data->>'status' = 'flood'"
        wait_until(lambda: scalar(dsn, FLOOD_JOBS) == scalar(dsn, flooded))
        for conn, event_id in written:
            time.sleep(rng.uniform(*idle_s))  # the leader waits, the racer is still open
            conn.commit()
            committed = time.monotonic()
            wait_until(lambda e=event_id: job_for(dsn, e), timeout=PROMPT_S, interval=0.005)
            latencies.append(time.monotonic() - committed)
    finally:
        stop.set()
        writer.join(10)
        for conn in conns:
            conn.close()
    return latencies, silent


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_events_written_while_the_leader_was_busy_never_wait_for_the_poll(orders: str) -> None:
    rng = random.Random(8)
    with InProcessListener(orders, poll_interval_s=POLL_S, leader_stale_s=4 * POLL_S):
        # One racer that stays open long after the leader went idle: before the fix, the
        # leader's back-off had grown to ~16 s by then and the event waited for it.
        latencies, silent = race(orders, 1, (20.0, 20.0), rng)
        # Then the race many times over, racers overlapping and ending in any order.
        for _ in range(8):
            more, quiet = race(orders, 3, (0.0, 0.3), rng)
            latencies += more
            silent += quiet
    # Most racers wrote while the leader read on (held the lock shared, sent no NOTIFY): the
    # race was run, not dodged.
    assert silent >= 10
    print(f"\nfan-out after commit: max {max(latencies) * 1000:.0f} ms over {len(latencies)}")


def test_no_listener_no_notify_after_it_stops_or_dies(orders: str, tmp_path: Path) -> None:
    insert = "INSERT INTO orders (status) VALUES ('x')"
    config = tmp_path / "observers.yaml"
    config.write_text("observers:\n  - name: o\n    entity: Order\n    actions: [{type: log}]\n")
    for ending in ("stop", "kill"):
        proc = Worker(
            orders, "--role", "listener", "--config", str(config), log_path=tmp_path / "l.log"
        )
        try:
            # An idle leader holds the wake-up lock: writers notify.
            wait_until(lambda: notifications_before_marker(orders, insert) == [""])
        finally:
            if ending == "kill":
                proc.kill()
            proc.stop()
        assert notifications_before_marker(orders, insert) == []


@pytest.mark.timeout(180)
def test_a_killed_wake_up_session_does_not_leave_events_to_the_poll(orders: str) -> None:
    """The idle leader's wake-up lock lives on a session that nothing read while it was held:
    terminated, the lock was gone, writers found it free and skipped NOTIFY, and the leader,
    believing it held, slept the poll interval for every event until a burst came (no log)."""
    holding = (
        "SELECT count(*) FROM pg_locks WHERE database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) AND locktype = 'advisory' "
        "AND classid = 2024061502 AND mode = 'ExclusiveLock' AND granted"
    )
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgobs wake-up'"
    )
    with InProcessListener(orders, poll_interval_s=POLL_S, leader_stale_s=4 * POLL_S):
        for _ in range(3):
            wait_until(lambda: scalar(orders, holding) == 1)
            assert scalar(orders, kill) == 1
            wait_until(lambda: scalar(orders, holding) == 0)
            time.sleep(0.2)  # writers come a while after the session ended, as they would
            with psycopg.connect(orders, autocommit=True) as conn:
                row = conn.execute("INSERT INTO orders (status) VALUES ('x') RETURNING id")
                assert row.fetchone()
                event = conn.execute("SELECT max(id) FROM pgobs.events").fetchone()
            assert event
            wait_until(lambda e=event[0]: job_for(orders, e), timeout=PROMPT_S, interval=0.005)
