"""Migrations: fresh, idempotent, concurrent, and the same schema through psql -f."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import anyio
import psycopg
import pytest

from pgobs.db.migrate import migrate
from pgobs.db.sqlfiles import migration_files
from tests.support import run_pgobs, scalar

SCHEMA_QUERY = """
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT format('col %s.%s %s %s %s', table_name, column_name, data_type, is_nullable,
                coalesce(column_default, '')) AS line
  FROM information_schema.columns WHERE table_schema = 'pgobs'
  UNION ALL
  SELECT format('idx %s', indexdef) FROM pg_indexes WHERE schemaname = 'pgobs'
  UNION ALL
  SELECT format('fn %s(%s)', p.proname, pg_get_function_arguments(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgobs'
  UNION ALL
  SELECT format('opt %s %s', c.relname, c.reloptions::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'pgobs' AND c.reloptions IS NOT NULL
  UNION ALL
  SELECT format('ver %s', version) FROM pgobs.schema_migrations
) AS s
"""


def test_fresh_database_migrates_and_second_run_is_a_noop(empty_dsn: str) -> None:
    first = anyio.run(lambda: migrate(empty_dsn))
    assert first.pending == [v for v, _ in migration_files()]
    before = scalar(empty_dsn, SCHEMA_QUERY)
    second = anyio.run(lambda: migrate(empty_dsn))
    assert second.pending == []
    assert second.applied == first.pending
    assert scalar(empty_dsn, SCHEMA_QUERY) == before
    tables = scalar(
        empty_dsn,
        "SELECT array_agg(tablename::text) FROM pg_tables WHERE schemaname = 'pgobs'",
    )
    assert set(tables) >= {
        "events",
        "checkpoints",
        "listeners",
        "jobs",
        "dlq",
        "dedup",
        "cache",
        "circuits",
        "trail",
        "schema_migrations",
    }


def test_dry_run_changes_nothing(empty_dsn: str) -> None:
    plan = anyio.run(lambda: migrate(empty_dsn, dry_run=True))
    assert plan.pending
    assert scalar(empty_dsn, "SELECT to_regclass('pgobs.events') IS NULL")


def test_two_concurrent_migrate_processes_both_succeed(empty_dsn: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_pgobs(empty_dsn, "migrate"), range(2)))
    for result in results:
        assert result.returncode == 0, result.stderr
    outputs = sorted(r.stdout for r in results)
    assert any("applied: 0001" in o for o in outputs)
    assert any("up to date" in o for o in outputs)
    assert scalar(empty_dsn, "SELECT count(*) FROM pgobs.schema_migrations") == len(
        migration_files()
    )


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql client not installed")
def test_psql_f_gives_the_same_schema(empty_dsn: str, dsn: str) -> None:
    for _, path in migration_files():
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_dsn, "-f", str(path)],
            check=True,
            capture_output=True,
        )
    assert scalar(empty_dsn, SCHEMA_QUERY) == scalar(dsn, SCHEMA_QUERY)


def test_hot_tables_have_aggressive_autovacuum(dsn: str) -> None:
    options = scalar(
        dsn, "SELECT reloptions::text FROM pg_class WHERE oid = 'pgobs.jobs'::regclass"
    )
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert (
        scalar(dsn, "SELECT relpersistence FROM pg_class WHERE oid = 'pgobs.cache'::regclass")
        == "u"
    )


def test_event_ids_are_bigint(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        types = conn.execute(
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'pgobs' AND column_name = 'id'"
        ).fetchall()
    assert types and all(t == "bigint" for _, t in types)


def test_owners_of_tables_tracked_before_0015_can_add_partitions(empty_dsn: str) -> None:
    """0015 grants the capture function to the owner of every partitioned table tracked before
    it, as track() now does, and leaves their capture as it was."""

    def apply(versions: range) -> None:
        for version, path in migration_files():
            if int(version) in versions:
                subprocess.run(
                    ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_dsn, "-f", str(path)],
                    check=True,
                    capture_output=True,
                )

    owner = f"pgobs_owner_{uuid.uuid4().hex[:10]}"
    apply(range(1, 15))
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner}")
        try:
            conn.execute("CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) "
                         "PARTITION BY LIST (region)")  # fmt: skip
            conn.execute("CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
            conn.execute(f"ALTER TABLE m OWNER TO {owner}")
            conn.execute(f"ALTER TABLE m_eu OWNER TO {owner}")
            conn.execute("SELECT pgobs.track('m', 'M')")
            right = f"SELECT has_function_privilege('{owner}', 'pgobs.capture_partitioned()', "
            right += "'EXECUTE')"
            assert conn.execute(right).fetchone() == (False,)
            apply(range(15, 10_000))
            assert conn.execute(right).fetchone() == (True,)
            conn.execute("INSERT INTO m VALUES (1, 'eu')")
            events = conn.execute("SELECT entity_type, event_type FROM pgobs.events")
            assert events.fetchall() == [("M", "INSERT")]
        finally:
            conn.execute(f"DROP OWNED BY {owner}")
            conn.execute(f"DROP ROLE {owner}")
