"""Enrichment lookups against real Postgres, real Redis and a real HTTP service that fails on
command: results reach templates and handlers, the cache makes one call per key (single-flight
inside a worker), a failing lookup makes the job retry, and the cache action invalidates."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from pgobs.reliability.redisconn import redis_settings
from tests.support import Receiver, Worker, execute, fetch, scalar, wait_until


@dataclass
class CustomerService:
    """GET /customers/N answers {"id": N, "name": "customer N"}; ``fail[N]`` 503s come first."""

    url: str = ""
    calls: list[str] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        match = re.fullmatch(r"/customers/(\w+)", path)
        with self.lock:
            self.calls.append(path)
            if match is None:
                return 404, {}
            ident = match.group(1)
            if ident == "big":
                return 200, {"blob": "x" * (2 * 1024 * 1024)}
            if self.fail.get(ident):
                self.fail[ident] -= 1
                return 503, {"error": "down"}
        return 200, {"id": int(ident), "name": f"customer {ident}"}


@pytest.fixture
def customers() -> Iterator[CustomerService]:
    service = CustomerService()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body = service.answer(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


HTTP_CONFIG = """
observers:
  - name: obs-enriched
    entity: Order
    retry: {{max_attempts: 5, initial_delay_ms: 50, max_delay_ms: 200}}
    enrich:
      - name: customer
        http: {{url: "{service}/customers/{{{{ data.customer_id }}}}"}}
        cache: {{key: "customer:{{{{ data.customer_id }}}}", ttl: 5m}}
    actions:
      - type: webhook
        url: {url}/orders
        body_template: {{order: "{{{{ data.id }}}}", customer: "{{{{ enrich.customer.name }}}}"}}
"""


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def start(dsn: str, tmp_path: Path, config: str, *args: str) -> Worker:
    file = tmp_path / "observers.yaml"
    file.write_text(config)
    return Worker(dsn, "--config", str(file), *args, log_path=tmp_path / "worker.log")


def delivered(receiver: Receiver) -> dict[int, str]:
    return {int(r.json()["order"]): r.json()["customer"] for r in receiver.to("/orders")}


@pytest.mark.timeout(180)  # a loaded machine: the waits inside are bounded
def test_1000_events_for_10_customers_make_at_most_10_lookup_calls(
    orders: str, tmp_path: Path, receiver: Receiver, customers: CustomerService
) -> None:
    worker = start(orders, tmp_path, HTTP_CONFIG.format(service=customers.url, url=receiver.url))
    try:
        execute(orders, "INSERT INTO orders SELECT i, i % 10 FROM generate_series(1, 1000) i")
        receiver.wait_for(1000, "/orders", timeout=180)
        got = delivered(receiver)
        assert got == {i: f"customer {i % 10}" for i in range(1, 1001)}
        assert len(customers.calls) <= 10, customers.calls
        assert scalar(orders, "SELECT count(*) FROM pgobs.cache") == 10
    finally:
        worker.stop()


@pytest.mark.timeout(180)  # a loaded machine: the waits inside are bounded
def test_with_redis_the_cache_lives_in_redis(
    orders: str, tmp_path: Path, receiver: Receiver, customers: CustomerService, redis_url: str
) -> None:
    config = HTTP_CONFIG.format(service=customers.url, url=receiver.url)
    worker = start(orders, tmp_path, config, "--redis-url", redis_url)
    try:
        execute(orders, "INSERT INTO orders SELECT i, i % 5 FROM generate_series(1, 200) i")
        receiver.wait_for(200, "/orders", timeout=120)
        assert delivered(receiver) == {i: f"customer {i % 5}" for i in range(1, 201)}
        assert len(customers.calls) <= 5, customers.calls
        assert scalar(orders, "SELECT count(*) FROM pgobs.cache") == 0
        settings = redis_settings(redis_url, orders)
        assert settings is not None
        client = redis.Redis.from_url(redis_url)
        try:
            assert len(client.keys(settings.prefix + "cache:customer:*")) == 5
        finally:
            client.close()
    finally:
        worker.stop()


def test_a_failing_lookup_makes_the_job_retry_never_run_without_the_data(
    orders: str, tmp_path: Path, receiver: Receiver, customers: CustomerService
) -> None:
    customers.fail["7"] = 2
    worker = start(orders, tmp_path, HTTP_CONFIG.format(service=customers.url, url=receiver.url))
    try:
        execute(orders, "INSERT INTO orders VALUES (1, 7)")
        receiver.wait_for(1, "/orders", timeout=60)
        assert delivered(receiver) == {1: "customer 7"}
        assert customers.calls == ["/customers/7"] * 3
        wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.jobs") == 0)
        assert scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 0
        assert len(receiver.to("/orders")) == 1
    finally:
        worker.stop()


def test_a_lookup_that_keeps_failing_dead_letters_the_job_with_its_reason(
    orders: str, tmp_path: Path, receiver: Receiver, customers: CustomerService
) -> None:
    customers.fail["3"] = 100
    worker = start(orders, tmp_path, HTTP_CONFIG.format(service=customers.url, url=receiver.url))
    try:
        execute(orders, "INSERT INTO orders VALUES (1, 3)")
        wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 1, timeout=30)
        errors = scalar(orders, "SELECT errors::text FROM pgobs.dlq")
        assert "lookup customer: HTTP 503" in errors
        assert receiver.to("/orders") == []
        assert len(customers.calls) == 5
    finally:
        worker.stop()


GUARDED_CONFIG = """
egress: {{deny: ["127.0.0.0/8"]}}
observers:
  - name: obs-enriched
    entity: Order
    retry: {{max_attempts: 2, initial_delay_ms: 50, max_delay_ms: 50}}
    enrich:
      - name: customer
        http: {{url: "{service}/customers/{{{{ data.customer_id }}}}"}}
    actions: [{{type: log}}]
"""


def test_lookups_obey_the_egress_policy_and_a_bound_on_answers(
    orders: str, tmp_path: Path, customers: CustomerService
) -> None:
    """An HTTP lookup reaches only what webhooks may: a name resolving to a refused address is
    refused on the address it connected to, before a byte is sent, and for good; an answer past
    1 MiB fails the lookup instead of being held whole."""
    by_name = customers.url.replace("127.0.0.1", "localhost")
    worker = start(orders, tmp_path, GUARDED_CONFIG.format(service=by_name))
    try:
        execute(orders, "INSERT INTO orders VALUES (1, 7)")
        wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 1, timeout=30)
        errors = scalar(orders, "SELECT errors::text FROM pgobs.dlq")
        assert "lookup customer: refused by the egress policy" in errors, errors
        assert scalar(orders, "SELECT attempts FROM pgobs.dlq") == 1  # for good: not retried
        assert customers.calls == []
    finally:
        worker.stop()
    execute(orders, "DELETE FROM pgobs.dlq")
    big = GUARDED_CONFIG.replace('egress: {{deny: ["127.0.0.0/8"]}}\n', "").replace(
        "/customers/{{{{ data.customer_id }}}}", "/customers/big"
    )
    worker = start(orders, tmp_path, big.format(service=customers.url))
    try:
        execute(orders, "INSERT INTO orders VALUES (2, 8)")
        wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 1, timeout=30)
        errors = scalar(orders, "SELECT errors::text FROM pgobs.dlq")
        assert "lookup customer: the answer is larger than 1 MiB" in errors, errors
        assert customers.calls == ["/customers/big"] * 2
    finally:
        worker.stop()


SQL_CONFIG = """
observers:
  - name: obs-orders
    entity: Order
    enrich:
      - name: customer
        sql: "SELECT id, name FROM customers WHERE id = %(customer_id)s"
        cache: {{key: "customer:{{{{ data.customer_id }}}}", ttl: 1h}}
    actions:
      - type: webhook
        url: {url}/orders
        body_template: {{order: "{{{{ data.id }}}}", customer: "{{{{ enrich.customer.name }}}}"}}
  - name: obs-customer-changed
    entity: Customer
    event_type: UPDATE
    actions: [{{type: cache, keys: ["customer:{{{{ entity_id }}}}"]}}]
  - name: obs-handler
    entity: Order
    condition: "customer_id == 2"
    enrich:
      - name: customer
        sql: "SELECT id, name FROM customers WHERE id = %(customer_id)s"
    actions: [{{type: python, handler: "handlers:enriched"}}]
"""


def test_sql_lookup_reaches_templates_and_handlers_and_the_cache_action_invalidates(
    orders: str, tmp_path: Path, receiver: Receiver
) -> None:
    execute(orders, "CREATE TABLE customers (id int PRIMARY KEY, name text)")
    execute(orders, "CREATE TABLE handled (event_id bigint, how text)")
    execute(orders, "SELECT pgobs.track('customers', 'Customer')")
    execute(orders, "INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace')")
    worker = start(orders, tmp_path, SQL_CONFIG.format(url=receiver.url))
    try:
        execute(orders, "INSERT INTO orders VALUES (1, 1)")
        receiver.wait_for(1, "/orders", timeout=60)
        assert scalar(
            orders, "SELECT value->>'name' FROM pgobs.cache WHERE key = 'customer:1'"
        ) == ("Ada")
        execute(orders, "UPDATE customers SET name = 'Ada L.' WHERE id = 1")
        wait_until(
            lambda: not scalar(orders, "SELECT count(*) FROM pgobs.cache WHERE key = 'customer:1'")
        )
        execute(orders, "INSERT INTO orders VALUES (2, 1), (3, 2)")
        receiver.wait_for(3, "/orders", timeout=60)
        assert delivered(receiver) == {1: "Ada", 2: "Ada L.", 3: "Grace"}
        # The handler saw event.enrich and kept a value of its own through pgobs.cache.
        wait_until(lambda: fetch(orders, "SELECT event_id, how FROM handled"))
        assert fetch(orders, "SELECT how FROM handled") == [("Grace/gold",)]
        assert scalar(orders, "SELECT value FROM pgobs.cache WHERE key = 'tier:2'") == {
            "tier": "gold"
        }
    finally:
        worker.stop()
