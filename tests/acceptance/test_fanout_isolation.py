"""Fan-out runs apart from user handlers: a handler that blocks the worker's event loop does not
stall the leader's fan-out, and the blocked loop is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Worker, execute, pgobs_env, scalar, wait_until

CONFIG = """
observers:
  - name: obs-block
    entity: Block
    actions: [{type: python, handler: "handlers:block_loop", timeout_ms: 120000}]
  - name: obs-all
    entity: Order
    actions: [{type: log}]
"""


@pytest.mark.timeout(150)
def test_a_handler_blocking_the_event_loop_does_not_stall_fan_out(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE blocks (id bigserial PRIMARY KEY)")
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY)")
    execute(dsn, "CREATE TABLE starts (event_id bigint, pid int)")
    execute(dsn, "SELECT pgobs.track('blocks', 'Block')")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    release = tmp_path / "release"
    env = pgobs_env(dsn, PGOBS_TEST_RELEASE=str(release))
    worker = Worker(dsn, "--config", str(config), log_path=tmp_path / "worker.log", env=env)
    try:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader"))
        execute(dsn, "INSERT INTO blocks DEFAULT VALUES")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM starts"))  # the loop is held now
        execute(dsn, "INSERT INTO orders SELECT FROM generate_series(1, 20)")
        # The worker pool cannot claim these while its loop is held, so they stay in the table.
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'obs-all'") == 20,
            timeout=45,  # generous: another database's long transaction may hold fan-out back
        )
        wait_until(lambda: "event loop blocked" in worker.output())
        # The warning names the handler that holds the loop.
        assert "running: obs-block/handlers:block_loop" in worker.output()
        assert not release.exists()
        release.touch()
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0)
        assert worker.terminate() == 0
    finally:
        release.touch()
        worker.stop()
