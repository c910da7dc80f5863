"""``pgobs maintenance`` as a user runs it: what it removed, dry runs, one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.support import execute, run_pgobs, scalar


@pytest.mark.parametrize("command", ["run", "schedule", "unschedule"])
def test_maintenance_commands_have_help(command: str) -> None:
    result = run_pgobs(None, "maintenance", command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: pgobs maintenance" in result.stdout


def expired_events(dsn: str, count: int) -> None:
    execute(
        dsn,
        "INSERT INTO pgobs.events (entity_type, event_type, created_at) "
        "SELECT 'Order', 'INSERT', now() - interval '8 days' FROM generate_series(1, %s)",
        (count,),
    )
    # What the listener writes once it has fanned out everything committed so far.
    execute(
        dsn,
        "INSERT INTO pgobs.checkpoints (listener_id, snapshot) "
        "VALUES ('default', pg_current_snapshot())",
    )


def test_run_prints_what_it_removed_and_dry_run_what_it_would(dsn: str) -> None:
    expired_events(dsn, 30)
    dry = run_pgobs(dsn, "maintenance", "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(
        "dry run: would remove 30 event(s), 0 audit row(s), 0 stopped listener row(s), "
        "0 dead letter(s), 0 cache entries, 0 dedup fingerprint(s) in "
    )
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == 30

    done = run_pgobs(dsn, "maintenance", "run", "--batch-size", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 30 event(s), 0 audit row(s)")
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == 0

    report = json.loads(run_pgobs(dsn, "maintenance", "run", "--json").stdout)
    assert set(report) == {
        "events", "audit", "listeners", "dlq", "cache", "dedup", "took_s", "dry_run"
    }  # fmt: skip
    assert report["events"] == 0 and report["dry_run"] is False


def assert_one_line(result: object, *expected: str) -> None:
    code, stderr = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0]


def test_a_bad_setting_is_one_line_with_its_fix(dsn: str) -> None:
    execute(dsn, "UPDATE pgobs.settings SET value = '90' WHERE key = 'audit_retention'")
    assert_one_line(
        run_pgobs(dsn, "maintenance", "run"),
        "pgobs: error: pgobs.settings: audit_retention = '90' is not an interval with a unit",
        "UPDATE pgobs.settings SET value = '7 days' WHERE key = 'audit_retention'",
    )


def test_a_bad_batch_size_is_one_line(dsn: str) -> None:
    assert_one_line(
        run_pgobs(dsn, "maintenance", "run", "--batch-size", "0"),
        "--batch-size must be between 1 and 1000000, got 0",
    )


def test_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    assert_one_line(run_pgobs(empty_dsn, "maintenance", "run"), "run pgobs migrate")


@pytest.mark.parametrize("command", ["schedule", "unschedule"])
def test_without_pg_cron_schedule_and_unschedule_say_so_in_one_line(dsn: str, command: str) -> None:
    # The shared test server does not load pg_cron (test_pg_cron.py starts one that does).
    assert_one_line(
        run_pgobs(dsn, "maintenance", command),
        "pg_cron is not installed on this server",
        "shared_preload_libraries",
    )
    assert scalar(dsn, "SELECT pgobs.setting('maintenance_runner')") == "leader"
