"""A server's Retry-After decides the next attempt, up to its own cap, not max_delay_ms."""

from __future__ import annotations

from pathlib import Path

from tests.support import Receiver, Worker, execute, scalar, wait_until


def test_a_429_asking_for_two_minutes_is_retried_after_two_minutes(
    dsn: str, receiver: Receiver, tmp_path: Path
) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    receiver.default_status = 429
    receiver.extra_headers = {"Retry-After": "120"}
    config = tmp_path / "observers.yaml"
    config.write_text(
        f"""
observers:
  - name: obs-busy
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/busy"}}]
    retry: {{max_attempts: 3, initial_delay_ms: 10, max_delay_ms: 30000}}
"""
    )
    worker = Worker(dsn, "--config", str(config), log_path=tmp_path / "w.log")
    try:
        execute(dsn, "INSERT INTO orders (status) VALUES ('x')")
        wait_until(lambda: scalar(dsn, "SELECT last_error FROM pgobs.jobs"))
    finally:
        worker.stop()
    wait_s = scalar(dsn, "SELECT extract(epoch FROM run_at - now())::float8 FROM pgobs.jobs")
    assert 100 < wait_s <= 120  # not max_delay_ms' 30 s
