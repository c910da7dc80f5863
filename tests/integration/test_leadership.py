"""Leader locks: every listener id has a lock of its own."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgobs.db.sqlfiles import query
from tests.support import Worker, execute, fetch, run_pgobs, scalar, wait_until

# Two ids whose hashtext() is equal (found with a GROUP BY over generate_series): with the lock
# keyed on hashtext(listener_id) they shared one lock and only one of them could ever lead.
COLLIDING = ("shard-3311", "shard-295117")


def test_listener_ids_whose_hashes_collide_both_lead(dsn: str, tmp_path: Path) -> None:
    assert scalar(dsn, "SELECT hashtext(%s) = hashtext(%s)", COLLIDING)
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    shards = []
    for i, listener_id in enumerate(COLLIDING):
        config = tmp_path / f"{i}.yaml"
        config.write_text(
            f"observers:\n  - name: obs-{i}\n    entity: Order\n    actions: [{{type: log}}]\n"
        )
        args = ("--role", "listener", "--listener-id", listener_id, "--config", str(config))
        shards.append(Worker(dsn, *args, log_path=tmp_path / f"{i}.log"))
    try:
        execute(dsn, "INSERT INTO orders SELECT FROM generate_series(1, 20)")
        # Generous: on a shared server another database's long transaction holds fan-out back.
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 40, timeout=60)
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader") == 2,
            timeout=60,
        )
    finally:
        for w in shards:
            w.stop()
    assert fetch(dsn, "SELECT listener_id, event_id FROM pgobs.checkpoints ORDER BY 1") == [
        (COLLIDING[1], 20),
        (COLLIDING[0], 20),
    ]


def test_a_leader_stale_time_out_of_range_is_one_line() -> None:
    result = run_pgobs(
        "postgresql://nobody@127.0.0.1:1/none", "worker", "--leader-stale-seconds", "1"
    )
    assert result.returncode == 2  # a bad option: a configuration error
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pgobs: error: --leader-stale-seconds must be between 2 and 3600")


class Candidate:
    """One candidate's session, driving the leadership statements the listener runs."""

    def __init__(self, dsn: str, listener_id: str = "x") -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.params: dict[str, object] = {"listener_id": listener_id}
        self.params["lock_key"] = self.one("leader_lock_key")

    def one(self, name: str, **extra: object) -> object:
        row = self.conn.execute(query(name), {**self.params, **extra}).fetchone()
        return row[0] if row else None

    def fence(self, stale_s: float) -> list[int]:
        cur = self.conn.execute(query("fence_stale_leader"), {**self.params, "stale_s": stale_s})
        return [row[0] for row in cur.fetchall()]


def test_the_fence_ends_a_silent_idle_leader_and_leaves_a_busy_one(dsn: str) -> None:
    leader, standby = Candidate(dsn), Candidate(dsn)
    try:
        assert leader.params["lock_key"] == standby.params["lock_key"]
        assert leader.one("try_leader_lock") is True
        assert standby.one("try_leader_lock") is False
        assert standby.fence(stale_s=60) == []  # a fresh beat
        # Silent past the stale time, but inside a slow statement (here: one waiting for a lock
        # this test holds): the server works for it, so it is left alone.
        with psycopg.connect(dsn, autocommit=True) as blocker:
            blocker.execute("SELECT pg_advisory_lock(42)")
            busy = threading.Thread(
                target=leader.conn.execute, args=("SELECT pg_advisory_lock(42)",)
            )
            busy.start()
            waits_on = (
                "SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid = %s"
            )
            wait_until(lambda: scalar(dsn, waits_on, (leader.pid,)) == "Lock")
            time.sleep(0.3)  # the beat is older than the stale time below
            for _ in range(5):
                assert standby.fence(stale_s=0.2) == []
            blocker.execute("SELECT pg_advisory_unlock(42)")
            busy.join()
        # Idle and silent: its client is frozen or gone. Fenced, and the lock is free.
        assert wait_until(lambda: standby.fence(stale_s=0.2)) == [leader.pid]
        wait_until(lambda: standby.one("try_leader_lock"))
        assert standby.one("leader_beat") == 1
        with pytest.raises(psycopg.OperationalError):
            leader.conn.execute("SELECT 1")
    finally:
        leader.conn.close()
        standby.conn.close()


def test_the_fence_spares_a_lock_holder_the_beat_does_not_name(dsn: str) -> None:
    """Between taking the lock and its commit, the beat still names the previous leader."""
    leader, standby = Candidate(dsn), Candidate(dsn)
    try:
        assert leader.one("try_leader_lock") is True
        standby.conn.execute("UPDATE pgobs.leadership SET leader_pid = 0")
        time.sleep(0.3)  # the beat is older than the stale time below
        assert standby.fence(stale_s=0.2) == []
        # The leader itself learns from its next beat that the row is not its own.
        assert leader.one("leader_beat") is None
    finally:
        leader.conn.close()
        standby.conn.close()


def test_a_standby_that_may_not_see_the_leader_reports_it_and_leaves_it(dsn: str) -> None:
    """Another role's session is hidden in pg_stat_activity: the fence must neither guess nor
    stay silent, so the row comes back with ended NULL (the listener logs the fix)."""
    role = f"pgobs_standby_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: a name of our own
    execute(dsn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    leader = Candidate(dsn)  # a superuser's session, which the other role cannot see
    try:
        execute(dsn, sql.SQL("GRANT USAGE ON SCHEMA pgobs TO {}").format(sql.Identifier(role)))
        execute(dsn, sql.SQL("GRANT SELECT ON pgobs.leadership TO {}").format(sql.Identifier(role)))
        assert leader.one("try_leader_lock") is True
        params = {"listener_id": "x", "stale_s": 0.2}
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as standby:
            rows = wait_until(
                lambda: standby.execute(query("fence_stale_leader"), params).fetchall()
            )
        assert [(pid, ended) for pid, _, ended in rows] == [(leader.pid, None)]
        assert leader.one("leader_beat") == 1  # its session lives on
    finally:
        leader.conn.close()
        execute(dsn, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        execute(dsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
