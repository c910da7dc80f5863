"""``pgobs demo``: the whole path on a database of its own — a tracked table, inserts, webhooks
arriving at a local receiver, a failing endpoint whose job lands in the DLQ and is retried."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgobs.cli.session import Dsn
from pgobs.config.loader import parse_config
from pgobs.config.report import ConfigInvalid
from pgobs.db.connect import connect, resolve_dsn
from pgobs.db.embedded import stop_command
from pgobs.db.migrate import migrate
from pgobs.db.notify import EVENTS_CHANNEL, JOBS_CHANNEL, Notifier
from pgobs.errors import PgobsError
from pgobs.listener.listener import Listener, ListenerSettings
from pgobs.queue import dlq
from pgobs.queue.worker import WorkerPool, WorkerSettings

DEMO_DB = "pgobs_demo"
STEP_TIMEOUT_S = 30

CONFIG = """
observers:
  - name: obs-webhook
    entity: Order
    event_type: [created, updated]
    condition: "status == 'paid' && total > 100"
    actions:
      - type: webhook
        url: {base}/hooks/orders
        signing_secret: whsec_ZGVtby1zZWNyZXQ=
  - name: obs-flaky
    entity: Order
    event_type: created
    condition: "total > 1000"
    actions:
      - type: webhook
        url: {base}/hooks/flaky
    retry: {{max_attempts: 3, initial_delay_ms: 100, backoff_strategy: exponential}}
"""


class DemoReceiver:
    """A local webhook receiver; /hooks/flaky answers 503 until ``recover()``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.flaky_up = False
        self.lock = threading.Lock()

    def recover(self) -> None:
        self.flaky_up = True

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.received if p == path)


@contextmanager
def serve(receiver: DemoReceiver) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            failing = self.path == "/hooks/flaky" and not receiver.flaky_up
            status = 503 if failing else 200
            payload = orjson.loads(body) if body else {}
            if not failing:
                with receiver.lock:
                    receiver.received.append((self.path, payload))
            data = payload.get("data") or {}
            print(
                f"  ← {self.path} {status}  webhook-id={self.headers.get('webhook-id')}  "
                f"order {data.get('id')} {data.get('status')} {data.get('total')}"
                + ("  (signed)" if self.headers.get("webhook-signature") else "")
            )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo(*, dsn: Dsn = None) -> None:
    """Show the whole path on a database of its own (pgobs_demo): a tracked table, inserts,
    signed webhooks at a local receiver, a failing endpoint, the DLQ and a retry.

    Everything it starts stops when it ends, except an embedded Postgres (used when no DSN is
    given), which stays for later pgobs commands: the last line says how to stop it.
    """
    embedded = not (dsn or os.environ.get("PGOBS_DSN") or os.environ.get("DATABASE_URL"))
    resolved = resolve_dsn(dsn)
    anyio.run(lambda: run_demo(resolved))
    print(f"the database {DEMO_DB} stays for you to look at (pgobs status, pgobs dlq list)")
    if embedded:
        print(
            f"the embedded Postgres keeps running for later pgobs commands; stop it with: "
            f"{stop_command()}"
        )


async def run_demo(server_dsn: str) -> None:
    dsn = await _fresh_database(server_dsn)
    print(f"1. database {DEMO_DB}: migrating the pgobs schema")
    await migrate(dsn)
    conn = await connect(dsn, autocommit=True)
    try:
        await conn.execute(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, status text NOT NULL, total numeric)"
        )
        await conn.execute("SELECT pgobs.track('orders', 'Order')")
        print("2. table orders created and tracked as entity Order")
        receiver = DemoReceiver()
        with serve(receiver) as base:
            config, issues = parse_config(CONFIG.format(base=base), "demo observers.yaml")
            if config is None:
                raise ConfigInvalid(issues)
            print(
                f"3. receiver on {base}; observers: obs-webhook (paid orders over 100), "
                "obs-flaky (orders over 1000, to an endpoint that is down)"
            )
            await _run_pipeline(dsn, config, conn, receiver)
    finally:
        await conn.close()


async def _run_pipeline(dsn: str, config: Any, conn: Any, receiver: DemoReceiver) -> None:
    notifier = Notifier(dsn, (EVENTS_CHANNEL, JOBS_CHANNEL))
    listener = Listener(
        dsn, config, notifier.doorbells[EVENTS_CHANNEL], ListenerSettings(listener_id="demo")
    )
    pool = WorkerPool(
        dsn,
        config,
        notifier.doorbells[JOBS_CHANNEL],
        WorkerSettings(concurrency=8, lease_s=10, grace_s=2),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        tg.start_soon(listener.run)
        tg.start_soon(pool.run)
        with anyio.fail_after(STEP_TIMEOUT_S):
            await listener.became_leader.wait()
        print("4. worker running (listener leader + 8 action slots); inserting orders:")
        await conn.execute(
            "INSERT INTO orders (status, total) VALUES ('paid', 250), ('new', 80), "
            "('paid', 40), ('paid', 1500)"
        )
        await conn.execute("UPDATE orders SET status = 'paid' WHERE total = 80")
        await conn.execute("UPDATE orders SET total = 120 WHERE total = 80")
        await _wait(lambda: receiver.count("/hooks/orders") >= 3, "3 webhooks")
        print("5. obs-flaky's endpoint answers 503: 3 attempts with backoff, then the DLQ")
        dead = await _wait_async(lambda: dlq.list_dead(conn, "obs-flaky", 10), "a dead letter")
        for d in dead:
            print(
                f"  dead letter {d.id}: {d.observer} after {d.attempts} attempts — {d.last_error}"
            )
        receiver.recover()
        print("6. the endpoint recovered; pgobs dlq retry-all --observer obs-flaky:")
        moved = await dlq.retry_dead(conn, [d.id for d in dead])
        print(f"  retried {moved} dead letter(s)")
        await _wait(lambda: receiver.count("/hooks/flaky") >= 1, "the retried webhook")
        left = await dlq.dead_ids(conn, None)
        print(
            f"7. done: {receiver.count('/hooks/orders')} webhooks to /hooks/orders, "
            f"{receiver.count('/hooks/flaky')} to /hooks/flaky after the retry, "
            f"{len(left)} left in the DLQ."
        )
        pool.stop()
        tg.cancel_scope.cancel()


async def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise PgobsError(f"the demo waited {STEP_TIMEOUT_S}s for {what}", "see the log above")
        await anyio.sleep(0.02)


async def _wait_async(fetch: Any, what: str) -> Any:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not (found := await fetch()):
        if time.monotonic() > deadline:
            raise PgobsError(f"the demo waited {STEP_TIMEOUT_S}s for {what}", "see the log above")
        await anyio.sleep(0.05)
    return found


async def _fresh_database(server_dsn: str) -> str:
    admin = await connect(server_dsn, autocommit=True)
    try:
        name = sql.Identifier(DEMO_DB)
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PgobsError(
            f"the demo cannot create database {DEMO_DB}: {exc}",
            "run it as a user with CREATEDB, or without --dsn",
        ) from exc
    finally:
        await admin.close()
    return make_conninfo(server_dsn, dbname=DEMO_DB)
