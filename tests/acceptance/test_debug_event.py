"""``pgobs debug-event``: why an event did or did not reach each observer, and what it left."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import Worker, execute, run_pgobs, scalar, wait_until

CONFIG = """\
observers:
  - name: big-paid
    entity: Order
    event_type: [INSERT, UPDATE]
    condition: "status == 'paid' && total > 100"
    actions: [{type: log}]
  - name: customers
    entity: Customer
    actions: [{type: log}]
  - name: deletions
    entity: Order
    event_type: DELETE
    actions: [{type: log}]
  - name: every-order
    entity: Order
    actions: [{type: log}]
"""


def setup(dsn: str, tmp_path: Path) -> Path:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, total numeric)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    return config


def test_explains_each_observer_and_shows_the_jobs(dsn: str, tmp_path: Path) -> None:
    config = setup(dsn, tmp_path)
    worker = Worker(dsn, "--config", str(config), "--role", "listener", log_path=tmp_path / "w.log")
    try:
        execute(dsn, "INSERT INTO orders (status, total) VALUES ('paid', 80.50)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 1, timeout=60)
    finally:
        worker.stop()
    event_id = scalar(dsn, "SELECT id FROM pgobs.events")

    result = run_pgobs(dsn, "debug-event", "--event-id", str(event_id), "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"event {event_id}: Order 1 INSERT at ")
    assert "  listener default: fanned out" in out
    assert (
        "  big-paid: no match — condition: status == 'paid' && total > 100 is false for this "
        "event\n"
        "      status == 'paid' && total > 100 → false\n"
        "        status == 'paid' → true\n"
        "          status → 'paid'\n"
        "        total > 100 → false\n"
        "          total → 80.50\n"
    ) in out
    assert (
        "  customers: no match — entity: the observer watches 'Customer', the event is 'Order'"
        in out
    )
    assert (
        "  deletions: no match — event type: the observer takes DELETE, the event is INSERT" in out
    )
    assert "  every-order: matched" in out
    assert "every-order/log (log): available, attempt 0 of 5, next run " in out

    doc = json.loads(
        run_pgobs(
            dsn, "debug-event", "--event-id", str(event_id), "--config", str(config), "--json"
        ).stdout
    )
    assert doc["event"]["data"] == {"id": 1, "status": "paid", "total": 80.50}
    assert doc["fanned_out"] == {"default": True}
    verdicts = {v["observer"]: v for v in doc["observers"]}
    assert verdicts["every-order"]["matched"] is True
    big = verdicts["big-paid"]
    assert big["matched"] is False and big["reason"].startswith("condition: ")
    total = big["condition"]["parts"][1]
    assert total == {
        "expression": "total > 100",
        "value": False,
        "parts": [{"expression": "total", "value": 80.50}],
    }
    (job,) = doc["jobs"]
    assert (job["observer"], job["state"], job["attempts"]) == ("every-order", "available", 0)
    assert doc["dlq"] == [] and doc["audit"] == []
    # 0008's trail: the event's own record (what matched is in it too)
    assert [(t["kind"], t["event_id"]) for t in doc["trail"]][:1] == [("event", event_id)]


def test_dead_letters_history_and_unknown_ids(dsn: str, tmp_path: Path) -> None:
    config = setup(dsn, tmp_path)
    execute(dsn, "INSERT INTO orders (status, total) VALUES ('new', 5)")
    execute(dsn, "UPDATE orders SET status = 'paid'")
    execute(dsn, "DELETE FROM orders")
    update_id = scalar(dsn, "SELECT id FROM pgobs.events WHERE event_type = 'UPDATE'")
    execute(
        dsn,
        "INSERT INTO pgobs.dlq (job_id, event_id, observer, action, action_index, action_type, "
        "event, attempts, max_attempts, last_error, error_kind, errors, created_at) "
        "SELECT 9, id, 'every-order', 'log', 0, 'log', to_jsonb(e), 1, 5, 'HTTP 400', "
        '\'permanent\', \'[{"attempt": 1, "error": "HTTP 400", "kind": "permanent", '
        '"at": "2026-01-01T00:00:00+00:00"}]\', now() FROM pgobs.events e WHERE id = %s',
        (update_id,),
    )

    result = run_pgobs(dsn, "debug-event", "--event-id", str(update_id), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "  no listener has a checkpoint yet: not fanned out" in result.stdout
    assert "  changed status" in result.stdout
    assert "every-order/log (log): 1 attempts, permanent, failed at " in result.stdout
    assert "    - 2026-01-01T00:00:00+00:00: attempt 1 [permanent] HTTP 400" in result.stdout
    assert "jobs: none pending" in result.stdout

    missing = run_pgobs(dsn, "debug-event", "--event-id", "999999", "--config", str(config))
    assert missing.returncode == 5
    assert missing.stderr.strip() == (
        "pgobs: error: no event with id 999999 "
        "(list recent ones with pgobs debug-event --history 20)"
    )
    assert missing.stdout == ""

    history = json.loads(
        run_pgobs(
            dsn,
            "debug-event",
            "--history",
            "5",
            "--entity-type",
            "Order",
            "--kind",
            "updated",
            "--format",
            "json",
        ).stdout
    )
    assert [(e["id"], e["event_type"]) for e in history] == [(update_id, "UPDATE")]
    listed = run_pgobs(dsn, "debug-event", "--history", "2")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 3 and "DELETE" in lines[1] and "UPDATE" in lines[2]  # newest first

    no_config = run_pgobs(dsn, "debug-event", "--event-id", str(update_id), cwd=tmp_path / "..")
    assert "observers: not judged (no observers.yaml here; pass --config PATH)" in no_config.stdout
    bad = run_pgobs(dsn, "debug-event", "--event-id", "1", "--config", str(tmp_path / "no.yaml"))
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr
