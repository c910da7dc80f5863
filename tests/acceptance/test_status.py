"""``pgobs status`` as a probe: its JSON and its exit code with a healthy listener, with none
leading, and with one that lags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_privileges import login_role
from tests.support import Worker, execute, run_pgobs, scalar, wait_until

CONFIG = "observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n"


def status(dsn: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_pgobs(dsn, "status", "--json", *args)
    return result, json.loads(result.stdout)


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, note text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


@pytest.fixture
def listener(orders: str, tmp_path: Path) -> Iterator[Worker]:
    """A real listener process (no action workers: jobs stay queued for status to count)."""
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    worker = Worker(
        orders, "--config", str(config), "--role", "listener", log_path=tmp_path / "w.log"
    )
    yield worker
    if worker.proc.poll() is None:
        os.kill(worker.pid, signal.SIGCONT)  # a test that froze it must not leave it frozen
    worker.stop()


def test_no_listener_ever_is_unhealthy(orders: str) -> None:
    result, doc = status(orders)
    assert result.returncode == 1
    assert doc["healthy"] is False
    assert doc["listeners"] == []
    assert result.stderr.strip() == (
        "pgobs: unhealthy: no listener has run against this database: nothing fans events out"
    )


def test_healthy_then_no_leader(orders: str, listener: Worker) -> None:
    wait_until(lambda: status(orders)[0].returncode == 0, timeout=60)
    execute(orders, "INSERT INTO orders (note) VALUES ('x'), ('y')")
    wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.jobs") == 2, timeout=30)
    execute(
        orders, "INSERT INTO pgobs.circuits (target, state, failures) VALUES ('h:443', 'open', 5)"
    )
    execute(
        orders,
        "INSERT INTO pgobs.dlq (job_id, event_id, observer, action_index, action_type, event, "
        "attempts, max_attempts, last_error, error_kind, created_at) "
        "VALUES (1, 1, 'a', 0, 'log', '{}', 1, 1, 'boom', 'permanent', now())",
    )

    result, doc = status(orders)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert doc["healthy"] is True and doc["problems"] == []
    (default,) = doc["listeners"]
    assert default["listener_id"] == "default"
    assert default["leader"]["pid"] == listener.pid
    assert default["leader"]["state"] == "running"
    assert 0 <= default["leader"]["heartbeat_age_s"] < 10
    assert default["lag_events"] == 0
    (jobs,) = doc["jobs"]
    assert {k: jobs[k] for k in ("observer", "ready", "running", "retrying")} == {
        "observer": "a",
        "ready": 2,
        "running": 0,
        "retrying": 0,
    }
    assert jobs["oldest_age_s"] >= 0
    assert [(d["observer"], d["total"], d["permanent"]) for d in doc["dlq"]] == [("a", 1, 1)]
    assert [(c["target"], c["state"]) for c in doc["open_circuits"]] == [("h:443", "open")]
    assert doc["open_event_writers"] == []

    text = run_pgobs(orders, "status", "--detailed")
    assert text.returncode == 0
    assert text.stdout.startswith("pgobs status: healthy\n")
    assert f"default: leader {default['leader']['host']}:{listener.pid} running" in text.stdout
    # Every column of the row (0009 adds the breaker's), in jsonb's key order.
    (line,) = [x for x in text.stdout.splitlines() if x.startswith("  h:443: open,")]
    assert ", failures 5," in line

    assert listener.terminate() == 0
    result, doc = status(orders)
    assert result.returncode == 1
    assert doc["healthy"] is False
    assert doc["listeners"][0]["leader"] is None
    assert doc["problems"] == ["listener 'default' has no leader: no running instance leads it"]
    assert "pgobs: unhealthy: listener 'default' has no leader" in result.stderr
    # --listener narrows the judgement to one listener id
    other, doc = status(orders, "--listener", "other")
    assert other.returncode == 1
    assert doc["problems"] == [
        "no listener 'other' has run against this database: nothing fans events out"
    ]


def test_a_lagging_listener_fails_the_probe_until_it_catches_up(
    orders: str, listener: Worker
) -> None:
    wait_until(lambda: status(orders)[0].returncode == 0, timeout=60)
    os.kill(listener.pid, signal.SIGSTOP)  # frozen: events pile up behind it
    execute(orders, "INSERT INTO orders (note) SELECT 'n' FROM generate_series(1, 3)")

    def lagging() -> dict[str, Any] | None:
        result, doc = status(orders, "--max-lag", "1", "--max-heartbeat-age", "3600")
        return doc if result.returncode == 1 else None

    doc = wait_until(lagging, timeout=60)
    (default,) = doc["listeners"]
    assert default["lag_events"] == 3
    assert default["lag_seconds"] > 1
    assert any(p.startswith("listener 'default' lags ") for p in doc["problems"]), doc
    assert "3 events not fanned out; limit 1s" in " ".join(doc["problems"])

    os.kill(listener.pid, signal.SIGCONT)
    wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.jobs") == 3, timeout=60)
    result, doc = status(orders, "--max-lag", "1")
    assert result.returncode == 0, doc["problems"]
    assert doc["listeners"][0]["lag_events"] == 0


def test_a_stale_heartbeat_fails_the_probe(orders: str, listener: Worker) -> None:
    wait_until(lambda: status(orders)[0].returncode == 0, timeout=60)
    os.kill(listener.pid, signal.SIGSTOP)

    def stale() -> dict[str, Any] | None:
        result, doc = status(orders, "--max-heartbeat-age", "2")
        return doc if result.returncode == 1 else None

    doc = wait_until(stale, timeout=60)
    (problem,) = doc["problems"]
    assert problem.startswith("listener 'default': the leader ")
    assert f":{listener.pid} has not beaten for " in problem
    assert problem.endswith("(limit 2s)")


def test_the_operator_role_reads_status_and_debugs_events(
    orders: str, listener: Worker, tmp_path: Path
) -> None:
    """pgobs_operator may not read events as the listener does: status says whose lag it shows."""
    wait_until(lambda: status(orders)[0].returncode == 0, timeout=60)
    execute(orders, "INSERT INTO orders (note) VALUES ('x')")
    wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.jobs") == 1, timeout=30)
    event_id = scalar(orders, "SELECT id FROM pgobs.events")
    config = tmp_path / "observers.yaml"
    with login_role(orders, "pgobs_operator") as operator:
        result, doc = status(operator)
        assert result.returncode == 0, result.stderr
        (default,) = doc["listeners"]
        assert default["lag_measured"] == "at the leader's last heartbeat"
        assert default["leader"]["pid"] == listener.pid
        assert doc["search_sinks"] == []  # the operator reads where the trail ships (0014)
        explained = run_pgobs(
            operator, "debug-event", "--event-id", str(event_id), "--config", str(config)
        )
        assert explained.returncode == 0, explained.stderr
        assert "  a: matched" in explained.stdout
        assert "a/log (log): available, attempt 0 of 5" in explained.stdout


def test_a_retired_listener_id_still_holding_events_stays_unhealthy(
    orders: str, listener: Worker
) -> None:
    """A listener id whose instances are all gone (maintenance removes stopped rows after
    listeners_retention) but whose checkpoint remains holds back every event it has not read:
    status must keep saying so, or the events table grows with status green."""
    wait_until(lambda: status(orders)[0].returncode == 0, timeout=60)
    execute(
        orders,
        "INSERT INTO pgobs.checkpoints (listener_id, snapshot) VALUES ('shard-b', '3:3:')",
    )
    result, doc = status(orders)
    assert result.returncode == 1
    assert [li["listener_id"] for li in doc["listeners"]] == ["default", "shard-b"]
    (problem,) = doc["problems"]
    assert problem.startswith("listener 'shard-b' has no instance left but its checkpoint holds")
    assert "DELETE FROM pgobs.checkpoints WHERE listener_id = 'shard-b'" in problem
    # --listener narrows to it, too
    one, doc = status(orders, "--listener", "shard-b")
    assert one.returncode == 1 and doc["problems"] == [problem]
    execute(orders, "DELETE FROM pgobs.checkpoints WHERE listener_id = 'shard-b'")
    assert status(orders)[0].returncode == 0


def test_status_shows_what_a_search_sink_has_shipped_and_what_waits(orders: str) -> None:
    """Issue 11: the Elasticsearch backlog was only in the metrics of the shipping worker."""
    assert status(orders)[1]["search_sinks"] == []
    assert "search sinks: none" in run_pgobs(orders, "status").stdout
    execute(orders, "INSERT INTO pgobs.trail (kind, status) SELECT 'event', 'received' "
            "FROM generate_series(1, 3)")  # fmt: skip
    execute(orders, "INSERT INTO pgobs.trail_shipping (sink, txid, id, shipped, rejected, "
            "updated_at) SELECT 'elasticsearch', min(txid), min(id), 40, 2, now() - "
            "interval '5 minutes' FROM pgobs.trail")  # fmt: skip
    (sink,) = status(orders)[1]["search_sinks"]
    assert (sink["sink"], sink["shipped"], sink["rejected"], sink["backlog"]) == (
        "elasticsearch", 40, 2, 2,
    )  # fmt: skip
    assert 299 <= sink["last_shipped_age_s"] < 3600
    text = run_pgobs(orders, "status").stdout
    assert "elasticsearch: 40 shipped, 2 rejected; 2 waiting, the oldest" in text, text
