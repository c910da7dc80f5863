"""``pgobs track`` and ``pgobs untrack`` as a user runs them: every refusal is one line with
its cause and its fix."""

from __future__ import annotations

import uuid

import psycopg

from tests.support import execute, run_pgobs, scalar


def one_line_error(dsn: str, *args: str) -> str:
    result = run_pgobs(dsn, *args)
    assert result.returncode == 1, result.stdout
    (line,) = result.stderr.strip().splitlines()
    return line


def test_partitions_and_keys(dsn: str) -> None:
    execute(
        dsn,
        "CREATE TABLE shipments (id int, region text, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region)",
    )
    execute(dsn, "CREATE TABLE shipments_eu PARTITION OF shipments FOR VALUES IN ('eu')")
    ok = run_pgobs(dsn, "track", "shipments", "--entity", "Shipment", "--id-column", "id")
    assert ok.returncode == 0, ok.stderr
    assert one_line_error(dsn, "track", "shipments_eu") == (
        "pgobs: error: cannot track 'shipments_eu': pgobs.track: shipments_eu is a partition of "
        "shipments, which is tracked and captures its rows "
        "(untrack shipments first to track its partitions on their own)"
    )
    assert one_line_error(dsn, "untrack", "shipments_eu") == (
        "pgobs: error: cannot untrack 'shipments_eu': pgobs.untrack: shipments_eu is a partition "
        "of shipments, which is tracked (untrack shipments to stop capturing its partitions)"
    )
    untracked = run_pgobs(dsn, "untrack", "shipments")
    assert untracked.returncode == 0, untracked.stderr
    assert untracked.stdout.strip() == "stopped tracking shipments"

    execute(dsn, "CREATE TABLE readings (sensor text, at timestamptz, value numeric)")
    line = one_line_error(dsn, "track", "readings")
    assert line.startswith(
        "pgobs: error: cannot track 'readings': pgobs.track: readings has no primary key"
    )
    assert "--id-column" in line
    assert run_pgobs(dsn, "track", "readings", "--id-column", "sensor,at").returncode == 0
    execute(dsn, "INSERT INTO readings VALUES ('s1', '2026-01-01T00:00:00Z', 1)")
    assert scalar(dsn, "SELECT entity_id FROM pgobs.events") == "s1,2026-01-01T00:00:00+00:00"


def test_a_role_without_rights_gets_one_line(dsn: str) -> None:
    name = f"pgobs_login_{uuid.uuid4().hex[:10]}"
    execute(dsn, f"CREATE ROLE {name} LOGIN")
    try:
        execute(dsn, f"GRANT CREATE, USAGE ON SCHEMA public TO {name}")
        execute(dsn, f"GRANT USAGE ON SCHEMA pgobs TO {name}")
        as_role = psycopg.conninfo.make_conninfo(dsn, user=name)
        execute(as_role, "CREATE TABLE mine (id int PRIMARY KEY)")
        assert one_line_error(as_role, "track", "mine") == (
            "pgobs: error: cannot track 'mine': permission denied for function track "
            "(run pgobs track as the table's owner with EXECUTE on pgobs' functions, such as "
            "the role that ran pgobs migrate)"
        )
    finally:
        execute(dsn, f"DROP OWNED BY {name}")
        execute(dsn, f"DROP ROLE {name}")


def test_untrack_has_help() -> None:
    result = run_pgobs(None, "untrack", "--help")
    assert result.returncode == 0, result.stderr
    assert "Stop capturing TABLE's changes" in result.stdout
