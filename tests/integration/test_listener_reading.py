"""Reading by snapshots (issue 8, findings 1 and 4): exactly once through batch limits, restarts
and transactions open throughout; batches bounded by bytes; old checkpoints carried over; the
read's cost flat while a transaction stays open; and a warning naming who holds events back."""

from __future__ import annotations

import logging
import random
import threading
import time

import anyio
import psycopg
import pytest

from pgobs.config.loader import parse_config
from pgobs.db.connect import connect
from pgobs.db.migrate import migrate
from pgobs.db.notify import Doorbell
from pgobs.db.sqlfiles import migration_files, query
from pgobs.listener.listener import Batch, Checkpoint, Listener, ListenerSettings
from pgobs.observability import metrics
from tests.inprocess import ALL_ORDERS, InProcessListener
from tests.support import execute, fetch, scalar, wait_until

ONCE = "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)"
JOBS = "SELECT count(*) FROM pgobs.jobs"
EVENTS = "SELECT count(*) FROM pgobs.events"


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, note text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, ONCE)  # a second fan-out of any event would fail the batch, and the test
    return dsn


def write(dsn: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            conn.execute(
                "INSERT INTO orders (status) SELECT 'w' FROM generate_series(1, %s)",
                (rng.randint(1, 5),),
            )
            if rng.random() < 0.15:
                conn.rollback()
            else:
                conn.commit()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_small_batches_restarts_and_open_transactions_lose_and_double_nothing(
    orders: str, empty_dsn: str
) -> None:
    """Batches of 7 cut through a 300-event transaction and many small ones while listeners
    restart mid-slice; transactions stay open throughout, here and in another database."""
    rng = random.Random(4)
    stop = threading.Event()
    writers = [threading.Thread(target=write, args=(orders, stop, i)) for i in range(3)]
    with (
        psycopg.connect(empty_dsn) as elsewhere,
        psycopg.connect(orders) as held,
        psycopg.connect(orders) as late,
    ):
        elsewhere.execute("SELECT pg_current_xact_id()")
        held.execute("INSERT INTO orders (status) VALUES ('held')")
        late.execute("SELECT pg_current_xact_id()")  # an old xid whose event commits late
        for w in writers:
            w.start()
        mid_slice = 0
        try:
            for round_ in range(6):
                with InProcessListener(orders, batch_size=7):
                    if round_ == 1:
                        execute(orders, "INSERT INTO orders (status) SELECT 'big' "
                                "FROM generate_series(1, 300)")  # fmt: skip
                    if round_ == 3:
                        late.execute("INSERT INTO orders (status) VALUES ('late')")
                        late.commit()
                    time.sleep(rng.uniform(0.3, 0.8))
                mid_slice += scalar(orders, "SELECT count(*) FROM pgobs.checkpoints "
                                    "WHERE target IS NOT NULL")  # fmt: skip
            stop.set()
            for w in writers:
                w.join(10)
            assert mid_slice >= 2  # stopped with a slice half drained (target and position)
            with InProcessListener(orders, batch_size=7):
                wait_until(lambda: scalar(orders, JOBS) == scalar(orders, EVENTS), timeout=60)
                held.commit()
                wait_until(lambda: scalar(orders, JOBS) == scalar(orders, EVENTS))
        finally:
            stop.set()
            for w in writers:
                w.join(10)
    counts = fetch(orders, "SELECT data->>'status', count(*) FROM pgobs.events GROUP BY 1")
    assert dict(counts)["big"] == 300 and dict(counts)["held"] == 1
    assert scalar(orders, EVENTS) == scalar(orders, JOBS)


def run_batches(dsn: str, settings: ListenerSettings) -> list[tuple[int, int]]:
    """Fan out everything, batch by batch, each full batch's successor read on a session of its
    own while it is written (as the leader does); (events, bytes) of each batch."""
    config, _ = parse_config(ALL_ORDERS, "test")
    assert config is not None
    listener = Listener(dsn, config, Doorbell(), settings)

    async def main() -> list[tuple[int, int]]:
        conn = await connect(dsn, autocommit=True)
        reader = await connect(dsn, autocommit=True)
        checkpoint = Checkpoint()
        ahead: list[Batch] = []
        batches = []
        try:
            while True:
                before = metrics.listener_batch_bytes._sum.get()
                got = await listener._fan_out_batch(conn, reader, checkpoint, ahead)
                if not got:
                    return batches
                batches.append((got, int(metrics.listener_batch_bytes._sum.get() - before)))
        finally:
            await conn.close()
            await reader.close()

    return anyio.run(main)


def test_batches_are_bounded_by_bytes_and_take_at_least_one_row(orders: str) -> None:
    """Issue 8: 600 rows of 4 MB took a listener to 4.1 GB. The values compress to ~50 kB on
    disk; the budget counts what the listener receives."""
    four_mb = 4 * 1024 * 1024
    execute(orders, "INSERT INTO orders (status, note) SELECT 'big', repeat('x', %s) "
            "FROM generate_series(1, 9)", (four_mb,))  # fmt: skip
    execute(orders, "INSERT INTO orders (status, note) VALUES ('huge', repeat('y', %s))",
            (5 * four_mb,))  # fmt: skip
    execute(orders, "INSERT INTO orders (status) SELECT 'small' FROM generate_series(1, 50)")
    budget = 10 * 1024 * 1024
    batches = run_batches(orders, ListenerSettings(batch_size=500, batch_bytes=budget))
    # Rows are taken until the budget is reached: three of 4 MB, then one over budget alone.
    assert [n for n, _ in batches] == [3, 3, 3, 1, 50]
    for _, size in batches[:3]:
        assert 3 * four_mb < size < budget + four_mb + 4096  # counted as received, not stored
    assert batches[3][1] > 5 * four_mb
    assert scalar(orders, JOBS) == 60


def test_an_old_checkpoint_carries_on_without_loss_or_duplicates(empty_dsn: str) -> None:
    """A checkpoint (txid, event_id) written by a listener before 0004, in the middle of a
    transaction's events: after migrating, exactly the events after it are fanned out."""
    dsn = empty_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        for version, path in migration_files():
            if version < "0004":
                conn.execute(path.read_text())
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
        conn.execute("SELECT pgobs.track('orders', 'Order')")
        for rows in (3, 4, 2):
            conn.execute(
                "INSERT INTO orders (status) SELECT 'before' FROM generate_series(1, %s)", (rows,)
            )
        # The old listener had fanned out events 1-5: the first transaction and two of the
        # second's four.
        conn.execute(
            "INSERT INTO pgobs.checkpoints (listener_id, txid, event_id) "
            "SELECT 'default', txid, id FROM pgobs.events WHERE id = 5"
        )
    anyio.run(lambda: migrate(dsn))
    execute(dsn, ONCE)
    execute(dsn, "INSERT INTO orders (status) VALUES ('after')")
    with InProcessListener(dsn):
        wait_until(lambda: scalar(dsn, JOBS) == 5)
        wait_until(lambda: scalar(dsn, "SELECT target FROM pgobs.checkpoints") is None)
    assert [r[0] for r in fetch(dsn, "SELECT event_id FROM pgobs.jobs ORDER BY 1")] == [
        6,
        7,
        8,
        9,
        10,
    ]


def test_a_transaction_that_holds_events_back_is_named(
    orders: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgobs.listener")
    database = scalar(orders, "SELECT current_database()")
    with (
        InProcessListener(orders, open_writer_warn_s=0.5, heartbeat_s=0.2),
        psycopg.connect(orders) as writer,
    ):
        pid = writer.execute("SELECT pg_backend_pid()").fetchone()
        writer.execute("INSERT INTO orders (status) VALUES ('held')")
        execute(orders, "INSERT INTO orders (status) VALUES ('free')")
        wait_until(lambda: scalar(orders, JOBS) == 1)
        assert pid is not None
        named = f"backend pid {pid[0]}, database {database}"
        wait_until(lambda: any(named in r.getMessage() for r in caplog.records))
        gauge = metrics.listener_open_writer_seconds.labels(listener_id="default")
        assert gauge._value.get() >= 0.5
        writer.commit()
        wait_until(lambda: scalar(orders, JOBS) == 2)
        wait_until(lambda: gauge._value.get() == 0)
    warnings = [r.getMessage() for r in caplog.records if named in r.getMessage()]
    assert len(warnings) == 1  # once per transaction, not once per heartbeat


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_read_costs_the_same_after_200k_events_with_a_transaction_open(
    orders: str, empty_dsn: str
) -> None:
    """Each read looks up the previous snapshot's ended transactions and the new txid range,
    never the range from an old xmin: its cost does not grow while a transaction stays open."""
    with psycopg.connect(empty_dsn) as elsewhere, psycopg.connect(orders) as held:
        elsewhere.execute("SELECT pg_current_xact_id()")
        held.execute("INSERT INTO orders (status) VALUES ('held')")
        with (
            InProcessListener(orders, heartbeat_s=60),
            psycopg.connect(orders, autocommit=True) as conn,
        ):
            latencies = []
            for _ in range(30):  # single events, committed while both transactions stay open
                row = conn.execute("INSERT INTO orders (status) VALUES ('one') RETURNING id")
                written = time.monotonic()
                event = conn.execute("SELECT max(id) FROM pgobs.events").fetchone()
                assert row.fetchone() and event
                wait_until(lambda e=event[0]: job_for(orders, e), timeout=5, interval=0.002)
                latencies.append(time.monotonic() - written)
            latencies.sort()
            cost = read_cost(conn)
            started = time.monotonic()
            for _ in range(200):  # 200,000 events in 2,000 transactions
                conn.execute("DO $$ BEGIN FOR i IN 1..10 LOOP "
                             "INSERT INTO orders (status) SELECT 'n' FROM generate_series(1, 100);"
                             " COMMIT; END LOOP; END $$")  # fmt: skip
            wait_until(lambda: scalar(orders, JOBS) == scalar(orders, EVENTS), timeout=240)
            fan_out_s = time.monotonic() - started
            later = read_cost(conn)
        held.commit()
    print(
        f"\nwith a transaction open: insert to job p50 {latencies[15] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms; 200,000 events fanned out in {fan_out_s:.1f}s; "
        f"a 500-event read: {cost[0]} buffers, {cost[1]:.2f} ms before; "
        f"{later[0]} buffers, {later[1]:.2f} ms after"
    )
    assert later[0] <= cost[0] * 2 + 20


def job_for(dsn: str, event_id: int) -> bool:
    return bool(scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE event_id = %s", (event_id,)))


def read_cost(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, float]:
    """Buffers and time of reading 500 new events, from a caught-up snapshot that still lists
    the open transactions, warmed so that a cached generic plan is what runs."""
    prev = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    conn.execute("INSERT INTO orders (status) SELECT 'probe' FROM generate_series(1, 500)")
    read = (
        "SELECT * FROM pgobs.read_events(%s::text::pg_snapshot, pg_current_snapshot(), "
        "'0', 0, 500, 33554432)"
    )
    assert prev is not None
    for _ in range(8):
        assert len(conn.execute(read, prev).fetchall()) == 500
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + read, prev).fetchone()
    assert plan is not None
    root = plan[0][0]
    buffers = root["Plan"]["Shared Hit Blocks"] + root["Plan"]["Shared Read Blocks"]
    return int(buffers), float(root["Execution Time"])


def test_lag_counts_committed_events_not_yet_fanned_out(orders: str) -> None:
    """Lag follows the checkpoint through a half-drained slice; an open transaction's events
    are not lag until it commits."""
    config, _ = parse_config(ALL_ORDERS, "test")
    assert config is not None
    listener = Listener(orders, config, Doorbell(), ListenerSettings(batch_size=2))

    def lag() -> tuple[int, float]:
        row = fetch(orders, query("listener_lag"), {"listener_id": "default"})[0]
        return int(row[0]), float(row[1])

    async def one_batch() -> int:
        conn = await connect(orders, autocommit=True)
        try:
            checkpoint = await listener._load_checkpoint(conn)
            return await listener._fan_out_batch(conn, conn, checkpoint, [])
        finally:
            await conn.close()

    with psycopg.connect(orders) as held:
        held.execute("INSERT INTO orders (status) VALUES ('held')")
        execute(orders, "INSERT INTO orders (status) SELECT 'new' FROM generate_series(1, 5)")
        time.sleep(0.3)
        count, age = lag()
        assert count == 5 and age >= 0.3
        assert anyio.run(one_batch) == 2
        assert scalar(orders, "SELECT target IS NOT NULL FROM pgobs.checkpoints")
        assert lag()[0] == 3
        held.commit()
    assert lag()[0] == 4
    while anyio.run(one_batch):
        pass
    assert lag() == (0, 0.0)
    assert scalar(orders, JOBS) == 6


def test_a_fan_out_that_wrote_jobs_wakes_the_workers_of_its_process(orders: str) -> None:
    """The in-process wake-up (one hop shorter than the NOTIFY's round trip through the server)
    follows the batches that wrote jobs, and only those."""
    config, _ = parse_config(ALL_ORDERS, "test")
    assert config is not None
    woken: list[int] = []
    listener = Listener(
        orders, config, Doorbell(), ListenerSettings(), jobs_written=lambda: woken.append(1)
    )

    async def one_batch() -> int:
        conn = await connect(orders, autocommit=True)
        try:
            checkpoint = await listener._load_checkpoint(conn)
            return await listener._fan_out_batch(conn, conn, checkpoint, [])
        finally:
            await conn.close()

    execute(orders, "SELECT pgobs.emit('Invoice', 'custom', '1', '{}')")  # no observer matches
    assert anyio.run(one_batch) == 1 and woken == []
    execute(orders, "INSERT INTO orders (status) VALUES ('new')")
    assert anyio.run(one_batch) == 1 and woken == [1]
