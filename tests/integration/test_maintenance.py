"""pgobs.run_maintenance() (migration 0007) against real listeners, writers and a real queue:
it removes exactly what it may, in batches, beside everything else that runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_privileges import login_role, refused
from tests.support import Worker, execute, fetch, run_pgobs, scalar, wait_until

# Orders match no observer (no job keeps them); a Held event gets a job, which no worker runs.
CONFIG = """
observers:
  - name: kept
    entity: Held
    actions: [{type: log}]
"""

COUNTS = "SELECT events, audit, listeners, dlq, cache, dedup FROM pgobs.run_maintenance(%s, %s)"


@pytest.fixture
def tables(dsn: str, tmp_path: Path) -> tuple[str, Path]:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, phase text)")
    execute(dsn, "CREATE TABLE held (id bigserial PRIMARY KEY, phase text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "SELECT pgobs.track('held', 'Held')")
    execute(dsn, "UPDATE pgobs.settings SET value = '0 seconds' WHERE key = 'events_retention'")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    return dsn, config


def listener(dsn: str, config: Path, listener_id: str, tmp_path: Path) -> Worker:
    return Worker(
        dsn,
        "--role",
        "listener",
        "--listener-id",
        listener_id,
        "--config",
        str(config),
        log_path=tmp_path / f"listener-{listener_id}.log",
    )


def passed(dsn: str, listener_id: str, phase: str) -> bool:
    """Whether the listener's stored checkpoint has fanned out every committed event of phase."""
    return bool(
        scalar(
            dsn,
            "SELECT coalesce(bool_and(pg_visible_in_snapshot(e.txid, c.snapshot)), false) "
            "FROM pgobs.events e JOIN pgobs.checkpoints c ON c.listener_id = %s "
            "WHERE e.data ->> 'phase' = %s",
            (listener_id, phase),
        )
    )


def phases(dsn: str) -> dict[str, int]:
    rows = fetch(
        dsn,
        "SELECT entity_type || ':' || (data ->> 'phase'), count(*) FROM pgobs.events GROUP BY 1",
    )
    return {key: int(n) for key, n in rows}


class Writers:
    """Threads committing order inserts, one event per transaction, until stopped."""

    def __init__(self, dsn: str, phase: str, threads: int = 2) -> None:
        self.dsn = dsn
        self.phase = phase
        self.written = 0
        self.longest_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write) for _ in range(threads)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _write(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.monotonic()
                conn.execute("INSERT INTO orders (phase) VALUES (%s)", (self.phase,))
                took = time.monotonic() - started
                with self._lock:
                    self.written += 1
                    self.longest_s = max(self.longest_s, took)


@pytest.fixture
def holder(tables: tuple[str, Path]) -> Iterator[psycopg.Connection]:
    """An open transaction that wrote events before any listener read."""
    dsn, _ = tables
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders (phase) SELECT 'open' FROM generate_series(1, 3)")
        yield conn


def test_events_go_once_every_listener_fanned_them_out(
    tables: tuple[str, Path], holder: psycopg.Connection, tmp_path: Path
) -> None:
    dsn, config = tables
    execute(dsn, "INSERT INTO orders (phase) SELECT 'p1' FROM generate_series(1, 200)")
    execute(dsn, "INSERT INTO held (phase) VALUES ('p1')")

    lagging = listener(dsn, config, "lagging", tmp_path)
    try:
        wait_until(lambda: passed(dsn, "lagging", "p1"), timeout=30)
    finally:
        lagging.stop()

    current = listener(dsn, config, "current", tmp_path)
    try:
        execute(dsn, "INSERT INTO orders (phase) SELECT 'p2' FROM generate_series(1, 100)")
        wait_until(lambda: passed(dsn, "current", "p2"), timeout=30)
        # Removed in batches of 7 while writers commit and the current listener fans out.
        with Writers(dsn, "during") as writers:
            wait_until(lambda: writers.written >= 20)
            removed = fetch(dsn, COUNTS, (False, 7))[0]
        assert removed[0] == 200
        # Every p1 order, which both listeners passed, and nothing else.
        assert phases(dsn) == {"Held:p1": 1, "Order:p2": 100, "Order:during": writers.written}

        # The open transaction commits; the lagging listener catches up; now everything goes
        # but the event a pending job still reads.
        holder.commit()
        execute(dsn, "INSERT INTO orders (phase) VALUES ('last')")
        wait_until(lambda: passed(dsn, "current", "last"), timeout=30)
    finally:
        current.stop()
    assert phases(dsn)["Order:open"] == 3  # its transaction was open: no listener had passed it
    assert fetch(dsn, COUNTS, (False, 7))[0][0] == 0  # the lagging listener still holds them

    lagging = listener(dsn, config, "lagging", tmp_path)
    try:
        wait_until(lambda: passed(dsn, "lagging", "last"), timeout=30)
    finally:
        lagging.stop()
    assert fetch(dsn, COUNTS, (False, 7))[0][0] == 100 + writers.written + 3 + 1
    assert phases(dsn) == {"Held:p1": 1}
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 2  # one per listener, both kept


def checkpoint_now(dsn: str, listener_id: str = "default") -> None:
    """A listener's checkpoint that has passed every transaction committed so far, as the
    listener writes it after a drained batch."""
    execute(
        dsn,
        "INSERT INTO pgobs.checkpoints (listener_id, snapshot) "
        "VALUES (%s, pg_current_snapshot()) "
        "ON CONFLICT (listener_id) DO UPDATE SET snapshot = EXCLUDED.snapshot",
        (listener_id,),
    )


def everything(dsn: str) -> list[tuple[object, ...]]:
    return fetch(
        dsn,
        "SELECT 'events', count(*) FROM pgobs.events UNION ALL "
        "SELECT 'listeners', count(*) FROM pgobs.listeners UNION ALL "
        "SELECT 'dlq', count(*) FROM pgobs.dlq UNION ALL "
        "SELECT 'cache', count(*) FROM pgobs.cache UNION ALL "
        "SELECT 'dedup', count(*) FROM pgobs.dedup",
    )


def old_and_young(dsn: str) -> None:
    """Rows of every kind, some past their retention and some not."""
    execute(
        dsn,
        """
        INSERT INTO pgobs.events (entity_type, event_type, created_at)
        SELECT 'Order', 'INSERT', now() - interval '8 days' FROM generate_series(1, 30);
        INSERT INTO pgobs.events (entity_type, event_type) SELECT 'Order', 'INSERT'
        FROM generate_series(1, 10);
        INSERT INTO pgobs.listeners (instance_id, listener_id, host, pid, state, last_heartbeat)
        VALUES ('old:1', 'default', 'h', 1, 'stopped', now() - interval '2 days'),
               ('new:2', 'default', 'h', 2, 'stopped', now() - interval '1 hour'),
               ('dead:3', 'default', 'h', 3, 'running', now() - interval '2 days');
        INSERT INTO pgobs.dlq (job_id, event_id, observer, action_index, action_type, event,
                               attempts, max_attempts, error_kind, created_at, failed_at)
        SELECT g, g, 'o', 0, 'webhook', '{}', 5, 5, 'transient', now(), now() - interval '40 days'
        FROM generate_series(1, 4) AS g;
        INSERT INTO pgobs.cache (key, value, expires_at)
        SELECT 'k' || g, '1', now() - interval '1 minute' * g FROM generate_series(1, 12) AS g;
        INSERT INTO pgobs.cache (key, value, expires_at) VALUES ('live', '1', now() + '1 hour');
        INSERT INTO pgobs.dedup (fingerprint, expires_at)
        SELECT 'f' || g, now() - interval '1 second' FROM generate_series(1, 9) AS g;
        INSERT INTO pgobs.dedup (fingerprint, expires_at) VALUES ('live', now() + '1 hour');
        """,
    )
    checkpoint_now(dsn)


def test_each_step_removes_what_is_past_its_retention_and_dry_run_changes_nothing(
    dsn: str,
) -> None:
    old_and_young(dsn)
    before = everything(dsn)
    assert fetch(dsn, COUNTS, (True, 4)) == [(30, 0, 1, 0, 12, 9)]
    assert everything(dsn) == before
    assert fetch(dsn, COUNTS, (False, 4)) == [(30, 0, 1, 0, 12, 9)]
    assert dict(everything(dsn)) == {
        "events": 10,
        "listeners": 2,  # one stopped an hour ago, one never said it stopped
        "dlq": 4,  # dlq_retention unset: dead letters stay
        "cache": 1,
        "dedup": 1,
    }
    execute(dsn, "UPDATE pgobs.settings SET value = '30 days' WHERE key = 'dlq_retention'")
    assert fetch(dsn, COUNTS, (False, 3)) == [(0, 0, 0, 4, 0, 0)]


def test_the_trail_past_its_retention_goes_a_day_at_a_time(dsn: str) -> None:
    """The audit step of 0008: whole partitions of pgobs.trail (tests/integration/test_trail.py
    has the rest)."""
    execute(
        dsn,
        """
        SELECT pgobs.trail_partition((now() AT TIME ZONE 'UTC')::date - 92);
        INSERT INTO pgobs.trail (kind, status, at)
        SELECT 'event', 'error', now() - interval '92 days' FROM generate_series(1, 25);
        INSERT INTO pgobs.trail (kind, status) VALUES ('event', 'error');
        """,
    )
    assert fetch(dsn, COUNTS, (True, 4)) == [(0, 1, 0, 0, 0, 0)]  # one partition
    assert fetch(dsn, COUNTS, (False, 4)) == [(0, 1, 0, 0, 0, 0)]
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail") == 1
    execute(dsn, "UPDATE pgobs.settings SET value = NULL WHERE key = 'audit_retention'")
    execute(dsn, "SELECT pgobs.trail_partition((now() AT TIME ZONE 'UTC')::date - 400)")
    assert fetch(dsn, COUNTS, (False, 4)) == [(0, 0, 0, 0, 0, 0)]  # NULL: kept for ever


def test_without_every_listener_checkpointed_no_event_goes(dsn: str) -> None:
    execute(dsn, "UPDATE pgobs.settings SET value = '0 seconds' WHERE key = 'events_retention'")
    execute(dsn, "SELECT pgobs.emit('Order', '1', 'created', '{}')")
    assert fetch(dsn, COUNTS, (False, 10))[0][0] == 0  # no listener has read anything
    checkpoint_now(dsn, "a")
    execute(dsn, "INSERT INTO pgobs.leadership (listener_id) VALUES ('b')")
    assert fetch(dsn, COUNTS, (False, 10))[0][0] == 0  # b leads but has fanned out nothing
    checkpoint_now(dsn, "b")
    assert fetch(dsn, COUNTS, (False, 10))[0][0] == 1


def test_a_run_beside_an_open_one_does_not_wait_for_it(dsn: str) -> None:
    execute(dsn, "UPDATE pgobs.settings SET value = '0 seconds' WHERE key = 'events_retention'")
    execute(
        dsn,
        "INSERT INTO pgobs.events (entity_type, event_type) "
        "SELECT 'Order', 'INSERT' FROM generate_series(1, 3000)",
    )
    checkpoint_now(dsn)
    with psycopg.connect(dsn) as first:
        assert first.execute(COUNTS, (False, 100)).fetchone() == (3000, 0, 0, 0, 0, 0)
        # The first run's transaction is open, holding the rows it deleted: a second run leaves
        # events to it (an advisory lock) instead of waiting on them.
        with psycopg.connect(dsn, autocommit=True) as second:
            second.execute("SET lock_timeout = '2s'")
            assert second.execute(COUNTS, (False, 100)).fetchone() == (0, 0, 0, 0, 0, 0)
        first.commit()
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == 0


def test_runs_in_parallel_remove_each_row_once(dsn: str) -> None:
    execute(dsn, "UPDATE pgobs.settings SET value = '0 seconds' WHERE key = 'events_retention'")
    execute(
        dsn,
        "INSERT INTO pgobs.events (entity_type, event_type) "
        "SELECT 'Order', 'INSERT' FROM generate_series(1, 5000)",
    )
    checkpoint_now(dsn)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: fetch(dsn, COUNTS, (False, 50))[0][0], range(3)))
    assert sum(results) == 5000
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7", "events_retention = '7' is not an interval with a unit"),
        ("a week", "events_retention = 'a week' is not an interval with a unit"),
        ("-1 day", "events_retention = '-1 day' is negative"),
        # "keep for ever" written as a long interval: now() minus it is no timestamp at all
        ("10000 years", "events_retention = '10000 years' is too long"),
    ],
)
def test_a_bad_setting_fails_the_run_before_anything_goes(
    dsn: str, value: str, message: str
) -> None:
    old_and_young(dsn)
    before = everything(dsn)
    execute(dsn, "UPDATE pgobs.settings SET value = %s WHERE key = 'events_retention'", (value,))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        execute(dsn, COUNTS, (False, 10))
    assert message in str(caught.value)
    assert "UPDATE pgobs.settings SET value = '7 days' WHERE key = 'events_retention'" in (
        caught.value.diag.message_hint or ""
    )
    assert everything(dsn) == before


def test_an_unknown_setting_is_an_error_naming_the_known_ones(dsn: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject, match="no setting 'event_retention'"):
        scalar(dsn, "SELECT pgobs.setting('event_retention')")
    assert scalar(dsn, "SELECT pgobs.setting('events_retention')") == "7 days"
    assert scalar(dsn, "SELECT pgobs.setting('dlq_retention')") is None
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch_size must be at least"):
        execute(dsn, COUNTS, (False, 0))
    # NULL is neither: some steps took it for a dry run, others deleted (without the lock)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="dry_run must be true or"):
        execute(dsn, COUNTS, (None, 10))


def test_job_counts_per_observer_and_state(dsn: str) -> None:
    execute(
        dsn,
        """
        INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, state, run_at,
                                leased_until, created_at)
        VALUES (1, 'a', 0, 'log', 'available', now() - interval '5 minutes', NULL,
                now() - interval '5 minutes'),
               (2, 'a', 0, 'log', 'available', now(), NULL, now()),
               (3, 'a', 0, 'log', 'scheduled', now() - interval '1 minute', NULL, now()),
               (4, 'a', 0, 'log', 'scheduled', now() + interval '1 hour', NULL, now()),
               (5, 'a', 0, 'log', 'running', now(), now() + interval '30 seconds', now()),
               (6, 'b', 0, 'log', 'running', now(), now() - interval '1 second', now())
        """,
    )
    rows = fetch(
        dsn,
        "SELECT observer, ready, running, stalled, retrying, total, "
        "extract(epoch FROM oldest_ready_age) >= 300, next_retry_at > now() "
        "FROM pgobs.job_counts ORDER BY observer",
    )
    assert rows == [("a", 3, 1, 0, 1, 5, True, True), ("b", 0, 1, 1, 0, 1, None, None)]


def test_every_table_and_the_dlq_columns_explain_themselves(dsn: str) -> None:
    uncommented = fetch(
        dsn,
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'pgobs'::regnamespace "
        "AND c.relkind IN ('r', 'v', 'p') AND obj_description(c.oid, 'pg_class') IS NULL",
    )
    assert uncommented == []
    for column in ("action", "error_kind", "payload", "event", "errors", "failed_at"):
        assert scalar(
            dsn,
            "SELECT col_description('pgobs.dlq'::regclass, attnum) FROM pg_attribute "
            "WHERE attrelid = 'pgobs.dlq'::regclass AND attname = %s",
            (column,),
        )


def test_the_leader_runs_maintenance_on_its_interval(
    tables: tuple[str, Path], tmp_path: Path
) -> None:
    dsn, config = tables
    execute(dsn, "UPDATE pgobs.settings SET value = '1 second' WHERE key = 'maintenance_interval'")
    execute(dsn, "INSERT INTO orders (phase) SELECT 'p1' FROM generate_series(1, 50)")
    leader = listener(dsn, config, "default", tmp_path)
    try:
        wait_until(lambda: "Order:p1" not in phases(dsn), timeout=30)
    finally:
        leader.stop()
    assert "ran maintenance: removed 50 event(s)" in leader.output()


@pytest.mark.parametrize("group", ["pgobs_worker", "pgobs_operator"])
def test_the_leader_and_operator_roles_run_maintenance(dsn: str, group: str) -> None:
    """As their group roles grant: both run it (the worker's leader when pg_cron does not);
    only the operator changes settings; neither deletes events any other way."""
    old_and_young(dsn)
    with login_role(dsn, group) as role_dsn:
        assert fetch(role_dsn, COUNTS, (False, 10)) == [(30, 0, 1, 0, 12, 9)]
        assert scalar(role_dsn, "SELECT pgobs.setting('events_retention')") == "7 days"
        assert refused(role_dsn, "DELETE FROM pgobs.events") == "InsufficientPrivilege"
        change = "UPDATE pgobs.settings SET value = '1 day' WHERE key = 'events_retention'"
        if group == "pgobs_operator":
            execute(role_dsn, change)
            assert scalar(role_dsn, "SELECT count(*) FROM pgobs.job_counts") == 0
        else:
            assert refused(role_dsn, change) == "InsufficientPrivilege"


def test_a_maintenance_runner_that_is_neither_leader_nor_pg_cron_is_reported(
    tables: tuple[str, Path], tmp_path: Path
) -> None:
    """'Leader' or 'cron' matched neither runner, so no one ran maintenance, silently."""
    dsn, config = tables
    execute(dsn, "UPDATE pgobs.settings SET value = '1 second' WHERE key = 'maintenance_interval'")
    execute(dsn, "UPDATE pgobs.settings SET value = 'Leader' WHERE key = 'maintenance_runner'")
    leader = listener(dsn, config, "default", tmp_path)
    try:
        wait_until(lambda: "maintenance failed" in leader.output(), timeout=60)
    finally:
        leader.stop()
    assert (
        "pgobs.settings: maintenance_runner = 'Leader' is neither 'leader' nor 'pg_cron'"
        in leader.output()
    )
    result = run_pgobs(dsn, "maintenance", "schedule")
    assert result.returncode == 1
    assert result.stderr.startswith("pgobs: error: pgobs.settings: maintenance_runner = 'Leader'")


def test_expired_events_a_pending_job_names_stay_whatever_else_the_queue_holds(dsn: str) -> None:
    """0016: only events from the oldest one a pending job names are checked against the queue
    (reading it per batch hashed the whole queue); those before it go, that one stays, and so
    does each later one a job names, while later ones no job names go too."""
    execute(dsn, "UPDATE pgobs.settings SET value = '0 seconds' WHERE key = 'events_retention'")
    ids = [
        scalar(dsn, "SELECT pgobs.emit('Order', 'created', %s, '{}')", (str(n),)) for n in range(8)
    ]
    named = [ids[3], ids[6]]  # jobs wait for these two
    for event_id in named:
        execute(dsn, "INSERT INTO pgobs.jobs (event_id, observer, action, action_index, "
                "action_type) VALUES (%s, 'o', 'a', 0, 'log')", (event_id,))  # fmt: skip
    checkpoint_now(dsn, "a")
    assert fetch(dsn, COUNTS, (True, 2))[0][0] == 6  # dry run: counted, in batches of 2
    assert fetch(dsn, COUNTS, (False, 2))[0][0] == 6
    assert [r[0] for r in fetch(dsn, "SELECT id FROM pgobs.events ORDER BY id")] == named
