"""Hot queries keep their index plans (a claim once hash-joined whole tables: 30 ms a claim)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgobs.db.sqlfiles import query
from tests.support import execute

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


def test_claim_uses_the_claimable_index_and_never_scans_tables(filled: str) -> None:
    tree = plan(filled, "claim_jobs", {"limit": 512, "worker": "w", "lease_s": 30})
    assert seq_scans(tree) == set(), json.dumps(tree)[:2000]
    assert {"jobs_claimable", "jobs_pkey", "events_pkey"} <= indexes(tree)


def test_fan_out_reads_events_by_txid_id_index(filled: str) -> None:
    # The read itself runs in pgobs.read_events (plpgsql); listener_lag inlines the same slice.
    tree = plan(filled, "listener_lag", {"listener_id": "default"})
    assert seq_scans(tree) == set()
    assert "events_txid_id" in indexes(tree)


def test_outcome_writes_find_jobs_by_key(filled: str) -> None:
    ids = list(range(1, 600))
    params = {
        "completed": ids,
        "retry_ids": ids,
        "retry_delays": [0.1] * len(ids),
        "retry_errors": ["e"] * len(ids),
        "worker": "w",
        "dead_ids": ids,
        "dead_errors": ["e"] * len(ids),
        "dead_kinds": ["transient"] * len(ids),
        "drop_ids": ids,
        "drop_errors": ["e"] * len(ids),
        "drop_kinds": ["transient"] * len(ids),
    }
    tree = plan(filled, "write_outcomes", params)
    assert "jobs" not in seq_scans(tree) and "events" not in seq_scans(tree)
