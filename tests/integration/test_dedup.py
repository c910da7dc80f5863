"""Dedup windows against real Postgres, real Redis and a real HTTP receiver: a change written
twice within the window fires once, in Postgres mode and in Redis mode; after the window it
fires again; Redis killed mid-run loses nothing and dedup carries on in Postgres; a listener that
dies between Redis' SET and its commit leaves nothing that swallows the event."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
import redis

from pgobs.config.loader import parse_config
from pgobs.db.connect import connect
from pgobs.db.notify import Doorbell
from pgobs.listener.listener import Checkpoint, Listener, ListenerSettings
from pgobs.reliability.redisconn import redis_settings
from tests.support import Receiver, Worker, execute, fetch, run_pgobs, scalar, wait_until

CONFIG = """
observers:
  - name: obs-dedup
    entity: Order
    dedup: {{window: {window}}}
    actions:
      - type: webhook
        url: {url}/orders
        body_template: {{id: "{{{{ entity_id }}}}", status: "{{{{ data.status }}}}"}}
  - name: obs-keyed
    entity: Order
    event_type: paid
    dedup: {{window: 1h}}
    actions: [{{type: webhook, url: "{url}/paid"}}]
"""

FINGERPRINTS = "SELECT count(*) FROM pgobs.dedup WHERE fingerprint NOT LIKE 'batch:%'"


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigint PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def start_worker(
    dsn: str, tmp_path: Path, receiver: Receiver, window: str, redis_url: str | None = None
) -> Worker:
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG.format(window=window, url=receiver.url))
    args = ["--config", str(config)]
    if redis_url:
        args += ["--redis-url", redis_url]
    worker = Worker(dsn, *args, log_path=tmp_path / "worker.log")
    wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader"))
    return worker


def all_done(dsn: str, *, jobs: bool = True) -> None:
    """Every event fanned out (the checkpoint passed the last) and, with ``jobs``, every job run."""
    last = scalar(dsn, "SELECT max(id) FROM pgobs.events")
    wait_until(lambda: scalar(dsn, "SELECT event_id FROM pgobs.checkpoints") == last, timeout=60)
    if jobs:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0, timeout=60)


def statuses(receiver: Receiver) -> list[str]:
    return [r.json()["status"] for r in receiver.to("/orders")]


def fires_once_then_again(dsn: str, receiver: Receiver) -> None:
    execute(dsn, "INSERT INTO orders VALUES (1, 'new')")
    # The same change twice (an application retry), and a different one after it.
    for status in ("paid", "paid", "shipped"):
        execute(dsn, "UPDATE orders SET status = %s WHERE id = 1", (status,))
    receiver.wait_for(3, "/orders", timeout=60)
    # Every event was fanned out (the checkpoint passed the last), and still only three fired.
    all_done(dsn)
    assert sorted(statuses(receiver)) == ["new", "paid", "shipped"]


def after_the_window_fires_again(dsn: str, receiver: Receiver, worker: Worker) -> None:
    execute(dsn, "UPDATE orders SET status = 'paid' WHERE id = 1")  # like the skipped one
    receiver.wait_for(4, "/orders", timeout=60)
    assert sorted(statuses(receiver)) == ["new", "paid", "paid", "shipped"]


@pytest.mark.timeout(180)  # a loaded machine: the waits inside are bounded
def test_postgres_mode_fires_once_within_the_window_and_again_after(
    orders: str, tmp_path: Path, receiver: Receiver
) -> None:
    worker = start_worker(orders, tmp_path, receiver, "2s")
    try:
        fires_once_then_again(orders, receiver)
        assert scalar(orders, FINGERPRINTS) == 3  # new, paid, shipped
        # The second 'paid' would be a duplicate only within 2 s: wait for its fingerprint to
        # expire (a condition, not a sleep of our own).
        wait_until(
            lambda: (
                scalar(orders, "SELECT count(*) FROM pgobs.dedup WHERE expires_at > now()") == 0
            ),
            timeout=30,
        )
        after_the_window_fires_again(orders, receiver, worker)
    finally:
        worker.stop()


def test_the_idempotency_key_of_emit_is_the_fingerprint(
    orders: str, tmp_path: Path, receiver: Receiver
) -> None:
    worker = start_worker(orders, tmp_path, receiver, "1h")
    try:
        emit = "SELECT pgobs.emit('Order', 'paid', '1', %s::jsonb, %s)"
        execute(orders, emit, ('{"try": 1}', "order-1-paid"))
        execute(orders, emit, ('{"try": 2}', "order-1-paid"))  # other data, same key
        execute(orders, emit, ('{"try": 1}', "order-2-paid"))
        # The four-argument emit still works, and without a key the data decides.
        execute(orders, "SELECT pgobs.emit('Order', 'paid', '3', '{\"try\": 9}')")
        receiver.wait_for(3, "/paid", timeout=60)
        all_done(orders)
        tries = sorted(r.json()["data"]["try"] for r in receiver.to("/paid"))
        assert tries == [1, 1, 9]
        assert scalar(orders, "SELECT idempotency_key FROM pgobs.events WHERE id = 2") == (
            "order-1-paid"
        )
        # The duplicate is in the trail (pgobs search 'status:deduplicated').
        found = fetch(
            orders,
            "SELECT event_id, observer, entity_id FROM pgobs.trail WHERE status = 'deduplicated'",
        )
        assert sorted(found) == [(2, "obs-dedup", "1"), (2, "obs-keyed", "1")]
    finally:
        worker.stop()


@pytest.mark.timeout(180)  # a loaded machine: the waits inside are bounded
def test_redis_mode_fires_once_within_the_window_and_again_after(
    orders: str, tmp_path: Path, receiver: Receiver, redis_url: str
) -> None:
    worker = start_worker(orders, tmp_path, receiver, "2s", redis_url)
    try:
        fires_once_then_again(orders, receiver)
        # The fast path: fingerprints live in Redis, Postgres holds only the batches' marks.
        assert scalar(orders, FINGERPRINTS) == 0
        assert scalar(orders, "SELECT count(*) FROM pgobs.dedup") >= 1
        settings = redis_settings(redis_url, orders)
        assert settings is not None
        client = redis.Redis.from_url(redis_url)
        try:
            assert len(client.keys(settings.prefix + "dedup:*")) == 3
            wait_until(lambda: not client.keys(settings.prefix + "dedup:*"), timeout=30)
        finally:
            client.close()
        after_the_window_fires_again(orders, receiver, worker)
    finally:
        worker.stop()


# -- Redis killed mid-run -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, on a free port (the shared one is never touched)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for the Redis tests"
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: _pings(client))
        yield url, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.timeout(180)  # a loaded machine: the waits inside are bounded
def test_redis_killed_mid_run_loses_nothing_and_postgres_dedups_on(
    orders: str,
    tmp_path: Path,
    receiver: Receiver,
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = private_redis
    worker = start_worker(orders, tmp_path, receiver, "1h", url)
    try:
        # Before: ten orders, each change written twice.
        for i in range(1, 11):
            execute(orders, "INSERT INTO orders VALUES (%s, 'new')", (i,))
            execute(orders, "UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
            execute(orders, "UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
        receiver.wait_for(20, "/orders", timeout=60)
        all_done(orders, jobs=False)
        assert scalar(orders, FINGERPRINTS) == 0  # Redis did the work

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # During the outage: ten more orders, each change written twice.
        for i in range(11, 21):
            execute(orders, "INSERT INTO orders VALUES (%s, 'new')", (i,))
            execute(orders, "UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
            execute(orders, "UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
        receiver.wait_for(40, "/orders", timeout=60)
        all_done(orders)
        sent = [(r.json()["id"], r.json()["status"]) for r in receiver.to("/orders")]
        assert sorted(sent) == sorted([(str(i), s) for i in range(1, 21) for s in ("new", "paid")])
        # Postgres took over: the outage's fingerprints are rows.
        assert scalar(orders, FINGERPRINTS) == 20
        assert "Redis failed" in worker.output()
        assert scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 0
    finally:
        worker.stop()


# -- a listener that dies between SET NX and its commit ----------------------------------------


def test_a_redis_claim_of_a_batch_that_never_committed_does_not_swallow_the_event(
    orders: str, redis_url: str
) -> None:
    """The first listener claims the fingerprints in Redis, then its batch rolls back (as if it
    died before COMMIT). The next leader must fan the event out, and the next duplicate must be
    skipped."""
    config, issues = parse_config(
        "observers:\n  - name: obs\n    entity: Order\n    dedup: {window: 1h}\n"
        "    actions: [{type: log}]\n",
        "test",
    )
    assert config is not None, issues
    settings = ListenerSettings(redis=redis_settings(redis_url, orders))
    execute(orders, "INSERT INTO orders VALUES (1, 'new')")

    async def batch(listener: Listener, commit: bool) -> int:
        conn = await connect(orders, autocommit=commit)
        try:
            got = await listener._fan_out_batch(conn, conn, Checkpoint(), [])
            if not commit:
                await conn.rollback()  # dies before its COMMIT
            return got
        finally:
            await conn.close()
            if listener.dedup_redis is not None:
                await listener.dedup_redis.close()

    jobs = "SELECT count(*) FROM pgobs.jobs"
    assert anyio.run(batch, Listener(orders, config, Doorbell(), settings), False) == 1
    assert scalar(orders, jobs) == 0
    assert anyio.run(batch, Listener(orders, config, Doorbell(), settings), True) == 1
    assert scalar(orders, jobs) == 1  # fanned out although Redis held its fingerprint

    # The same event again (its batch replayed): a third leader, knowing nothing of the second,
    # finds the second's committed mark and skips it.
    execute(orders, "DELETE FROM pgobs.checkpoints")
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute("DELETE FROM pgobs.jobs")
    third = Listener(orders, config, Doorbell(), settings)

    async def drain() -> None:
        conn = await connect(orders, autocommit=True)
        checkpoint = Checkpoint()
        try:
            while await third._fan_out_batch(conn, conn, checkpoint, []):
                pass
        finally:
            await conn.close()
            if third.dedup_redis is not None:
                await third.dedup_redis.close()

    anyio.run(drain)
    assert scalar(orders, jobs) == 0


def test_a_redis_url_that_is_not_one_is_one_line_and_exit_2(orders: str, tmp_path: Path) -> None:
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG.format(window="5m", url="http://127.0.0.1:9"))
    result = run_pgobs(
        orders, "worker", "--config", str(config), "--redis-url", "http://127.0.0.1:6379"
    )
    assert result.returncode == 2  # a configuration error (pgobs.errors)
    assert result.stderr.strip().splitlines() == [
        "pgobs: error: --redis-url is not a Redis URL (it starts with http://) (write "
        "redis://host:6379/0, rediss:// for TLS, or unix:///path/redis.sock)"
    ]
