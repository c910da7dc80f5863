"""Hot queries keep their index plans (a claim once hash-joined whole tables: 30 ms a claim)."""

from __future__ import annotations

import inspect
import itertools
import json
from typing import Any

import psycopg
import pytest

from pgobs.db.sqlfiles import query
from pgobs.listener.listener import _read_row
from pgobs.queue.jobs import Batch, Outcome, _claimed_job
from tests.support import execute, fetch

ROWS = 20_000


@pytest.fixture
def filled(dsn: str) -> str:
    execute(
        dsn,
        "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
        "SELECT 'Order', g::text, 'INSERT', jsonb_build_object('id', g) "
        "FROM generate_series(1, %s) g",
        (ROWS,),
    )
    execute(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type) "
        "SELECT id, 'obs', 0, 'log' FROM pgobs.events",
    )
    execute(dsn, "VACUUM ANALYZE pgobs.events")
    execute(dsn, "VACUUM ANALYZE pgobs.jobs")
    return dsn


def plan(dsn: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        if name == "claim_jobs":
            conn.execute(query("claimer_session_settings"))  # as the claimer's session does
        cur = psycopg.ClientCursor(conn)
        cur.execute("EXPLAIN (FORMAT JSON) " + query(name), params)
        row = cur.fetchone()
        conn.rollback()
    assert row is not None
    found: dict[str, Any] = row[0][0]["Plan"]
    return found


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def seq_scans(tree: dict[str, Any]) -> set[str]:
    return {n["Relation Name"] for n in nodes(tree) if n["Node Type"] == "Seq Scan"}


def indexes(tree: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in nodes(tree) if "Index Name" in n}


CLAIM = {"limit": 512, "worker": "w", "lease_s": 30, "known": ["obs/#0"]}


def test_claim_uses_the_state_indexes_and_never_scans_tables(filled: str) -> None:
    tree = plan(filled, "claim_jobs", CLAIM)
    assert seq_scans(tree) == set(), json.dumps(tree)[:2000]
    assert {"jobs_available", "jobs_scheduled", "jobs_pkey", "events_pkey"} <= indexes(tree)


def test_a_deferred_backlog_costs_a_claim_nothing(dsn: str) -> None:
    """A million jobs waiting out a backoff: a claim of the ten due ones reads a handful of
    pages, not the deferred rows (the claim index once held them, 1,578 pages a claim)."""
    execute(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, state, run_at) "
        "SELECT g, 'obs', 0, 'log', 'scheduled', now() + interval '1 hour' "
        "FROM generate_series(1, 1000000) g",
    )
    execute(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, state, run_at) "
        "SELECT g, 'obs', 0, 'log', s, now() - interval '1 second' "
        "FROM generate_series(1, 5) g, unnest(ARRAY['scheduled', 'available']) s",
    )
    execute(dsn, "VACUUM ANALYZE pgobs.jobs")
    with psycopg.connect(dsn) as conn:
        conn.execute(query("claimer_session_settings"))
        cur = psycopg.ClientCursor(conn)
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("claim_jobs"), CLAIM)
        row = cur.fetchone()
        conn.rollback()
    assert row is not None
    tree = row[0][0]["Plan"]
    claimed = tree["Actual Rows"]
    assert claimed == 10, json.dumps(tree)[:3000]
    scans = {
        n["Index Name"]: n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0)
        for n in nodes(tree)
        if n.get("Index Name") in ("jobs_scheduled", "jobs_available")
    }
    # Finding the ten took a few pages each (the million deferred rows span thousands).
    assert len(scans) == 2 and max(scans.values()) < 10, scans


def test_fan_out_reads_events_by_txid_id_index(filled: str) -> None:
    # The read itself runs in pgobs.read_events (plpgsql); listener_lag inlines the same slice.
    tree = plan(filled, "listener_lag", {"listener_id": "default"})
    assert seq_scans(tree) == set()
    assert "events_txid_id" in indexes(tree)


def test_outcome_writes_find_jobs_by_key(filled: str) -> None:
    batch = Batch(starts=dict.fromkeys(range(1, 600), 1))
    for i, kind in zip(
        range(600, 3000), itertools.cycle(("completed", "retry", "dead", "drop", "defer"))
    ):
        batch.outcomes[i] = Outcome(i, 1, kind, "e", "transient", 0.1)
    tree = plan(filled, "write_outcomes", batch.params("w"))
    assert "jobs" not in seq_scans(tree) and "events" not in seq_scans(tree)


@pytest.mark.parametrize(
    ("name", "mapper", "params"),
    [
        ("claim_jobs", _claimed_job, CLAIM),
        (
            "fetch_committed_events",
            _read_row,
            {
                "snapshot": "3:3:",
                "target": None,
                "txid": 0,
                "event_id": 0,
                "limit": 1,
                "max_bytes": 1,
            },
        ),
    ],
)
def test_rows_map_to_objects_by_the_columns_names(
    dsn: str, name: str, mapper: Any, params: dict[str, Any]
) -> None:
    """Hot queries map rows positionally: the mapper's parameters must be the columns, in order."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(query(name), params)
        columns = [c.name for c in cur.description or []]
        conn.rollback()
    assert columns == list(inspect.signature(mapper).parameters)


def test_outcome_writes_skip_the_dead_entries_of_finished_jobs(dsn: str) -> None:
    """Between vacuums the index of running jobs keeps an entry for every job that ever ran.
    Planned on statistics that saw few running jobs, outcome writes once bitmap-scanned all of
    them (a drain slowed from 13,000 to 4,000 jobs/s as it went); they go by primary key."""
    execute(dsn, "ALTER TABLE pgobs.jobs SET (autovacuum_enabled = false)")
    execute(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, state, "
        "locked_by, leased_until) "
        "SELECT g, 'obs', 0, 'log', 'running', 'old', now() FROM generate_series(1, 20000) g",
    )
    execute(dsn, "DELETE FROM pgobs.jobs")
    execute(dsn, "ANALYZE pgobs.jobs")
    execute(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, state, "
        "locked_by, leased_until) "
        "SELECT g, 'obs', 0, 'log', 'running', 'w', now() FROM generate_series(1, 64) g",
    )
    ids = [row[0] for row in fetch(dsn, "SELECT id FROM pgobs.jobs")]
    batch = Batch()
    for i in ids:
        batch.outcomes[i] = Outcome(i, 1, "completed")
    statements = [
        ("write_outcomes", batch.params("w")),
        ("extend_leases", {"ids": ids, "worker": "w", "lease_s": 30}),
        ("release_jobs", {"ids": ids, "worker": "w"}),
    ]
    for name, params in statements:
        with psycopg.connect(dsn) as conn:
            cur = psycopg.ClientCursor(conn)
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query(name), params)
            row = cur.fetchone()
            conn.rollback()
        assert row is not None
        tree = row[0][0]["Plan"]
        assert "jobs_running" not in indexes(tree), (name, json.dumps(tree)[:3000])
        # 64 jobs by key: a few pages each, not the 20,000 dead entries' hundreds of pages.
        assert tree.get("Shared Hit Blocks", 0) + tree.get("Shared Read Blocks", 0) < 1000, name
    # The rescuer still finds expired leases through that index.
    assert "jobs_running" in indexes(plan(dsn, "rescue_expired_jobs", {}))
