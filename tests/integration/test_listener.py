"""The listener against real Postgres and real processes: commit-safe order, rollbacks, lag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import Worker, execute, fetch, scalar, wait_until

CONFIG = """
observers:
  - name: obs-all
    entity: Order
    actions: [{type: log}]
  - name: obs-paid
    entity: Order
    event_type: INSERT
    condition: "status == 'paid'"
    actions: [{type: log}, {type: log, level: debug}]
"""


@pytest.fixture
def orders(dsn: str, tmp_path: Path) -> tuple[str, Path]:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, note text)")
    execute(dsn, "CREATE TABLE other (x int)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    return dsn, config


@pytest.fixture
def listener(orders: tuple[str, Path], tmp_path: Path) -> Iterator[Worker]:
    dsn, config = orders
    proc = Worker(
        dsn, "--role", "listener", "--config", str(config), log_path=tmp_path / "listener.log"
    )
    try:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader"))
        yield proc
    finally:
        proc.stop()


def jobs_for(dsn: str, event_id: int) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE event_id = %s", (event_id,)))


def test_fans_out_one_job_per_matched_action(listener: Worker, orders: tuple[str, Path]) -> None:
    dsn, _ = orders
    execute(dsn, "INSERT INTO orders (status) VALUES ('paid'), ('new')")
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 4)
    rows = set(fetch(dsn, "SELECT event_id, observer, action_index, action_type FROM pgobs.jobs"))
    assert rows == {
        (1, "obs-all", 0, "log"),
        (1, "obs-paid", 0, "log"),
        (1, "obs-paid", 1, "log"),
        (2, "obs-all", 0, "log"),
    }
    checkpoint = "SELECT event_id FROM pgobs.checkpoints WHERE listener_id = 'default'"
    wait_until(lambda: scalar(dsn, checkpoint) == 2)


def test_out_of_order_commit_is_still_fanned_out(
    listener: Worker, orders: tuple[str, Path]
) -> None:
    """A lower event id whose transaction commits after higher ids were processed."""
    dsn, _ = orders
    with psycopg.connect(dsn) as early_xid, psycopg.connect(dsn) as late:
        early_xid.execute("INSERT INTO other VALUES (1)")  # takes the older transaction id
        late.execute("INSERT INTO orders (status) VALUES ('late')")  # event 1, newer xid
        early_xid.execute("INSERT INTO orders (status) VALUES ('early')")  # event 2, older xid
        early_xid.commit()
        wait_until(lambda: jobs_for(dsn, 2) == 1)
        assert jobs_for(dsn, 1) == 0  # still uncommitted: must wait, not be skipped
        late.commit()
    wait_until(lambda: jobs_for(dsn, 1) == 1)
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 2


def test_rolled_back_events_are_never_fanned_out(
    listener: Worker, orders: tuple[str, Path]
) -> None:
    dsn, _ = orders
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders (status) VALUES ('ghost')")
        conn.rollback()
    execute(dsn, "INSERT INTO orders (status) VALUES ('real')")
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 1)
    assert scalar(dsn, "SELECT event_id FROM pgobs.jobs") == 2  # id 1 was rolled back


def test_open_transactions_hold_back_only_their_own_events(
    listener: Worker, orders: tuple[str, Path], empty_dsn: str
) -> None:
    """Issue 8: an open transaction, here or in another database, no longer stalls fan-out."""
    dsn, _ = orders
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    with psycopg.connect(empty_dsn) as elsewhere, psycopg.connect(dsn) as writer:
        elsewhere.execute("SELECT pg_current_xact_id()")  # another database's open transaction
        writer.execute("INSERT INTO orders (status) VALUES ('held')")  # event 1, not committed
        execute(dsn, "INSERT INTO orders (status) SELECT 'new' FROM generate_series(1, 5)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 5)
        assert jobs_for(dsn, 1) == 0
        writer.commit()
        wait_until(lambda: jobs_for(dsn, 1) == 1)
        execute(dsn, "INSERT INTO orders (status) VALUES ('after')")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 7)
        elsewhere.rollback()
    wait_until(lambda: scalar(dsn, "SELECT max(lag_events) FROM pgobs.listeners") == 0)
    assert scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 7


def test_undecodable_event_is_audited_and_the_batch_goes_on(
    listener: Worker, orders: tuple[str, Path]
) -> None:
    dsn, _ = orders
    deep = "[" * 3000 + "]" * 3000
    execute(
        dsn,
        # Written directly: pgobs.emit refuses the event types of capture.
        "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
        "VALUES ('Order', '9', 'INSERT', jsonb_build_object('x', %s::jsonb))",
        (deep,),
    )
    execute(dsn, "INSERT INTO orders (status) VALUES ('after')")
    wait_until(lambda: jobs_for(dsn, 2) == 1)
    message = scalar(dsn, "SELECT message FROM pgobs.audit WHERE event_id = 1")
    assert "cannot decode" in message


def test_listener_ids_shard_with_their_own_checkpoints(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    shards = []
    for shard in ("a", "b"):
        config = tmp_path / f"{shard}.yaml"
        config.write_text(
            f"observers:\n  - name: obs-{shard}\n    entity: Order\n    actions: [{{type: log}}]\n"
        )
        shards.append(
            Worker(
                dsn,
                "--role",
                "listener",
                "--listener-id",
                shard,
                "--config",
                str(config),
                log_path=tmp_path / f"{shard}.log",
            )
        )
    try:
        execute(dsn, "INSERT INTO orders (status) SELECT 'x' FROM generate_series(1, 20)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 40)
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader") == 2)
    finally:
        for w in shards:
            w.stop()
    assert fetch(dsn, "SELECT listener_id, event_id FROM pgobs.checkpoints ORDER BY 1") == [
        ("a", 20),
        ("b", 20),
    ]
    assert fetch(dsn, "SELECT observer, count(*) FROM pgobs.jobs GROUP BY 1 ORDER BY 1") == [
        ("obs-a", 20),
        ("obs-b", 20),
    ]


def test_the_leader_retires_rows_of_killed_instances(
    listener: Worker, orders: tuple[str, Path]
) -> None:
    dsn, _ = orders
    execute(
        dsn,
        "INSERT INTO pgobs.listeners (instance_id, listener_id, host, pid, state, "
        "is_leader, last_heartbeat) VALUES ('ghost:1:x', 'default', 'ghost', 1, "
        "'running', true, now() - interval '1 minute')",
    )
    wait_until(
        lambda: (
            scalar(dsn, "SELECT state FROM pgobs.listeners WHERE instance_id = 'ghost:1:x'")
            == "stopped"
        )
    )
    assert scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader") == 1
