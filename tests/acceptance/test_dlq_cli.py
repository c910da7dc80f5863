"""``pgobs dlq`` as an operator uses it: readable, paged, forced retries, removal, grouping by
error, JSON everywhere; and the environment names platforms set."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support import Worker, execute, fetch, pgobs_env, run_pgobs, scalar, wait_until

CONFIG = """\
observers:
  - name: rejects
    entity: Order
    retry: {max_attempts: 1}
    actions: [{type: python, handler: "handlers:reject"}]
"""


def test_dead_letters_from_list_to_removal(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text(CONFIG)
    worker = Worker(dsn, "--config", str(config), log_path=tmp_path / "w.log")
    try:
        execute(dsn, "INSERT INTO orders (status) VALUES ('paid'), ('new')")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.dlq") == 2, timeout=60)
        first, second = [r[0] for r in fetch(dsn, "SELECT id FROM pgobs.dlq ORDER BY event_id")]

        listed = run_pgobs(dsn, "dlq", "list")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.strip().splitlines()
        assert "ENTITY ID" in header
        assert len(rows) == 2 and rows[0].split()[0] == str(second)  # newest first
        assert rows[1].split()[6] == "1"  # entity id of the first order
        assert "[permanent] handlers:reject: order 1 can never be shipped" in rows[1]
        page = json.loads(run_pgobs(dsn, "dlq", "list", "--offset", "1", "--json").stdout)
        assert [(d["id"], d["entity_id"]) for d in page] == [(first, "1")]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        later = run_pgobs(dsn, "dlq", "list", "--after", future)
        assert later.stdout.startswith("no dead letters (failed after ")

        shown = run_pgobs(dsn, "dlq", "show", str(first))
        assert shown.returncode == 0, shown.stderr
        labels = [line.split(":")[0].strip() for line in shown.stdout.splitlines()[1:10]]
        assert labels == [
            "observer",
            "action",
            "event",
            "attempts",
            "error kind",
            "last error",
            "failed at",
            "queued at",
            "job",
        ]
        assert "  event:        " in shown.stdout and " — Order 1 INSERT" in shown.stdout
        assert "  attempts:     1 of 1\n" in shown.stdout
        assert "  errors:\n    - " in shown.stdout
        assert "attempt 1 [permanent] handlers:reject: order 1 can never be shipped" in shown.stdout
        assert (
            json.loads(run_pgobs(dsn, "dlq", "show", str(first), "--format", "json").stdout)["id"]
            == first
        )

        # A retry fails again: the new dead letter is past its attempts, and says so.
        assert run_pgobs(dsn, "dlq", "retry", str(first)).returncode == 0
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgobs.dlq WHERE id > %s", (second,)) == 1,
            timeout=60,
        )
        again = scalar(dsn, "SELECT max(id) FROM pgobs.dlq")
        refused = run_pgobs(dsn, "dlq", "retry", str(again))
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"pgobs: error: dead letter {again} was retried from the DLQ before and failed "
            "again: it is past its max attempts (see why with pgobs dlq show, fix the cause, "
            "then retry with --force)"
        )
        history = run_pgobs(dsn, "dlq", "show", str(again)).stdout
        assert f"retried from dead letter {first}" in history
        dry = run_pgobs(dsn, "dlq", "retry-all", "--dry-run", "--observer", "rejects")
        assert f"would retry 1 dead letter(s) of rejects: {second}" in dry.stdout
        assert (
            f"held back 1 past their max attempts (retried before and failed again): {again}"
            in (dry.stdout)
        )
        forced = run_pgobs(dsn, "dlq", "retry", str(again), "--force", "--json")
        assert json.loads(forced.stdout) == {"retried": [again]}
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgobs.dlq WHERE id > %s", (again,)) == 1,
            timeout=60,
        )
    finally:
        worker.stop()

    nothing = run_pgobs(dsn, "dlq", "retry-all", "--observer", "nobody")
    assert nothing.returncode == 0
    assert nothing.stdout.strip() == "no dead letters of nobody: nothing to retry"

    by_error = run_pgobs(dsn, "dlq", "stats", "--by-error")
    assert by_error.returncode == 0, by_error.stderr
    assert "       1  [permanent] handlers:reject: order 1 can never be shipped" in by_error.stdout
    assert "       1  [permanent] handlers:reject: order 2 can never be shipped" in by_error.stdout
    grouped = json.loads(run_pgobs(dsn, "dlq", "stats", "--by-error", "--format", "json").stdout)
    assert sorted((g["error"], g["total"]) for g in grouped) == [
        ("handlers:reject: order 1 can never be shipped", 1),
        ("handlers:reject: order 2 can never be shipped", 1),
    ]

    asked = run_pgobs(dsn, "dlq", "remove", str(second))  # stdin is no terminal: no one to ask
    assert asked.returncode == 1
    assert asked.stderr.strip().endswith("deletes it for good (add --force to confirm)")
    removed = run_pgobs(dsn, "dlq", "remove", str(second), "--force")
    assert removed.stdout.strip() == f"dead letter {second} removed"
    assert scalar(dsn, "SELECT count(*) FROM pgobs.dlq WHERE id = %s", (second,)) == 0
    gone = run_pgobs(dsn, "dlq", "remove", str(second), "--force")
    assert gone.returncode == 5
    assert gone.stderr.strip() == (
        f"pgobs: error: no dead letter with id {second} (list them with pgobs dlq list)"
    )


def test_validate_config_as_json(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n")
    ok = run_pgobs(None, "validate-config", str(good), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert (doc["valid"], doc["errors"], doc["issues"]) == (True, 0, [])
    assert doc["observers"][0]["actions"] == [{"name": "log", "type": "log"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text("observers:\n  - name: a\n    entyty: Order\n    actions: [{type: log}]\n")
    failed = run_pgobs(None, "validate-config", str(bad), "--json")
    assert failed.returncode == 4
    doc = json.loads(failed.stdout)
    assert doc["valid"] is False and doc["errors"] >= 1
    (unknown,) = [i for i in doc["issues"] if "unknown key 'entyty'" in i["message"]]
    assert (unknown["line"], unknown["severity"], unknown["file"]) == (3, "error", str(bad))


def test_database_url_is_honoured_when_pgobs_dsn_is_unset(dsn: str) -> None:
    env = {k: v for k, v in pgobs_env(dsn).items() if k != "PGOBS_DSN"}
    env["DATABASE_URL"] = dsn
    result = run_pgobs(None, "dlq", "stats", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 0
    env["PGOBS_DSN"] = "postgresql://nobody@127.0.0.1:1/none"  # PGOBS_DSN wins
    refused = run_pgobs(None, "dlq", "stats", env=env)
    assert refused.returncode == 3  # connection
    assert "127.0.0.1:1/none" in refused.stderr
    assert os.environ.get("PGOBS_DSN") != env["PGOBS_DSN"]
