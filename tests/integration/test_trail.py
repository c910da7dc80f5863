"""The trail in Postgres: the search translation against the reference on real rows, the plans
of field queries, and partitions rotated by pgobs.maintain_audit."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from psycopg.types.json import Jsonb

from pgobs.search import parse, to_sql
from pgobs.search.ast import Node
from pgobs.trail.postgres import search_statement
from tests import search_reference
from tests.search_strategies import DATA_KEYS, OBSERVERS, STATUSES, WORDS, queries, render
from tests.support import execute, fetch, scalar

COLUMNS = (
    "at",
    "kind",
    "status",
    "entity_type",
    "entity_id",
    "event_type",
    "tenant",
    "actor",
    "observer",
    "observers",
    "action",
    "action_type",
    "attempt",
    "status_code",
    "message",
    "data",
)


def random_records(now: datetime, count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def scalar_value() -> Any:
        return rng.choice([None, rng.choice(WORDS), rng.randint(-3, 300), rng.random() < 0.5])

    def data() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in rng.sample(DATA_KEYS, rng.randint(0, 3)):
            shape = rng.random()
            if shape < 0.6:
                found[key] = scalar_value()
            elif shape < 0.8:
                found[key] = rng.sample(WORDS, rng.randint(0, 2))
            else:
                found[key] = {"id": scalar_value()}
        return found

    records = []
    for _ in range(count):
        event = rng.random() < 0.4
        records.append(
            {
                "at": now - timedelta(hours=rng.randint(0, 96), minutes=30),
                "kind": "event" if event else "action",
                "status": rng.choice(STATUSES[:2] if event else STATUSES[2:]),
                "entity_type": rng.choice(["Order", "User", "order"]),
                "entity_id": rng.choice([None, "42", "7", "420", "a"]),
                "event_type": rng.choice(["INSERT", "UPDATE", "signed_up"]),
                "tenant": rng.choice([None, *WORDS]),
                "actor": rng.choice([None, *WORDS]),
                "observer": None if event else rng.choice(OBSERVERS),
                "observers": (rng.sample(OBSERVERS, rng.randint(1, 3)) or None) if event else None,
                "action": None if event else rng.choice([None, "hook", "mail"]),
                "action_type": None if event else rng.choice([None, "webhook", "email"]),
                "attempt": None if event else rng.randint(1, 5),
                "status_code": None if event else rng.choice([None, 200, 404, 500]),
                "message": rng.choice([None, " ".join(rng.sample(WORDS, rng.randint(1, 4)))]),
                "data": data() if event else {},
            }
        )
    return records


SHARED = ("at", "entity_type", "event_type", "tenant", "actor", "observer", "action", "action_type")


def insert(dsn: str, records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Each record as a row of its own, except deliveries: those go in batch records of up to
    three jobs, as write_outcomes writes them (the jobs take the first one's envelope,
    and have no message or data). Returns each record's (id, seq) in pgobs.trail_records."""
    statement = sql.SQL("INSERT INTO pgobs.trail ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
    )
    keys: dict[int, tuple[int, int]] = {}  # a record's place in records -> its key
    batch: list[dict[str, Any]] = []
    places: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:

        def flush() -> None:
            for rec in batch[1:]:
                rec.update({name: batch[0][name] for name in SHARED})
            for rec in batch:
                rec["message"] = None
            found = conn.execute(
                "INSERT INTO pgobs.trail (kind, status, at, entity_type, event_type, tenant, "
                "actor, observer, action, action_type, batch_event_ids, batch_job_ids, "
                "batch_entity_ids, batch_attempts, batch_status_codes, batch_durations_ms, "
                "batch_terms) VALUES ('action', 'delivered', %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                [
                    *(batch[0][name] for name in SHARED),
                    [None] * len(batch),
                    [None] * len(batch),
                    [r["entity_id"] for r in batch],
                    [r["attempt"] for r in batch],
                    [r["status_code"] for r in batch],
                    [None] * len(batch),
                    sorted(
                        {
                            f"{name}={r[name]}"
                            for r in batch
                            for name in ("entity_id", "attempt", "status_code")
                            if r[name] is not None
                        }
                    ),
                ],
            ).fetchone()
            assert found is not None
            keys.update((place, (found[0], seq)) for seq, place in enumerate(places, 1))
            batch.clear()
            places.clear()

        for place, rec in enumerate(records):
            if rec["kind"] == "action" and rec["status"] == "delivered":
                batch.append(rec)
                places.append(place)
                if len(batch) == 3:
                    flush()
                continue
            row = [Jsonb(rec[c]) if c == "data" else rec[c] for c in COLUMNS]
            found = conn.execute(statement, row).fetchone()
            assert found is not None
            keys[place] = (found[0], 0)
        if batch:
            flush()
    return [keys[place] for place in range(len(records))]


class Sample:
    """Records in a database, and their ids (a short repr: hypothesis prints it)."""

    def __init__(self, dsn: str, records: list[dict[str, Any]], ids: list[tuple[int, int]]) -> None:
        self.dsn, self.records, self.ids = dsn, records, ids

    def __repr__(self) -> str:
        return f"Sample({len(self.records)} records)"


@pytest.fixture
def sample(dsn: str) -> Sample:
    now = scalar(dsn, "SELECT now()")
    records = random_records(now, 80)
    return Sample(dsn, records, insert(dsn, records))


def matching(dsn: str, node: Node) -> set[tuple[int, int]]:
    where, params = to_sql(node)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, seq FROM pgobs.trail_records AS t WHERE {}").format(where), params
        ).fetchall()
    return {(r[0], r[1]) for r in rows}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(node=queries(datetime(2026, 1, 1, tzinfo=UTC)))
def test_postgres_answers_what_the_reference_answers(sample: Sample, node: Node) -> None:
    dsn, records, ids = sample.dsn, sample.records, sample.ids
    now = scalar(dsn, "SELECT now()")
    expected = {
        i for i, rec in zip(ids, records, strict=True) if search_reference.evaluate(node, rec, now)
    }
    assert matching(dsn, node) == expected, render(node)


def test_the_text_full_text_sees_is_the_references(sample: Sample) -> None:
    dsn, records, ids = sample.dsn, sample.records, sample.ids
    stored = dict(
        fetch(
            dsn,
            "SELECT id, pgobs.trail_text(message, data) FROM pgobs.trail",
        )
    )
    for (i, _), rec in zip(ids, records, strict=True):
        assert stored[i] == search_reference.text(rec), json.dumps(rec, default=str)


# -- plans ------------------------------------------------------------------------------------


@pytest.fixture
def filled(dsn: str) -> str:
    execute(
        dsn,
        "SELECT pgobs.trail_partition((now() AT TIME ZONE 'UTC')::date - d) "
        "FROM generate_series(1, 5) AS d",
    )
    now = scalar(dsn, "SELECT now()")
    records = random_records(now, 40, seed=3)
    insert(dsn, records)
    # 30,000 more over four days (and so four partitions), as the plan tests need volume.
    execute(
        dsn,
        "INSERT INTO pgobs.trail (at, kind, status, event_id, entity_type, entity_id, "
        "event_type, observer, action_type, attempt, message, data) "
        "SELECT now() - make_interval(mins => g % 5000), "
        "CASE WHEN g % 3 = 0 THEN 'event' ELSE 'action' END, "
        "(ARRAY['delivered','retried','failed','matched'])[1 + g % 4], g, "
        "'Order', (g % 9000)::text, 'INSERT', 'obs-' || (g % 50), 'python', 1, "
        "'note ' || g, jsonb_build_object('status', 'state' || (g % 200), 'total', g) "
        "FROM generate_series(1, 30000) AS g",
    )
    execute(dsn, "VACUUM ANALYZE pgobs.trail")  # as autovacuum does: GIN pending lists merged
    return dsn


def plan_of(dsn: str, query: str) -> dict[str, Any]:
    statement, params = search_statement(parse(query), timedelta(days=36500), 50)
    with psycopg.connect(dsn) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params)
        row = cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("entity_id:42", "terms"),
        ("status:failed AND action_type:webhook", "terms"),
        ("observer:obs-7", "terms"),
        ("entity_type:Order AND event_kind:created AND attempt:3", "terms"),
        ("data.status:state7", "data"),
        ('"note 42"', "search"),
        ("paid*", "search"),
    ],
)
def test_field_queries_never_scan_the_whole_trail(filled: str, query: str, index: str) -> None:
    plan = plan_of(filled, query)
    sizes = dict(
        fetch(filled, "SELECT tableoid::regclass::text, count(*) FROM pgobs.trail GROUP BY 1")
    )
    big = {name for name, count in sizes.items() if count > 1000}
    assert len(big) >= 3  # the records spread over several partitions
    scans = [n for n in nodes(plan) if f"pgobs.{n.get('Relation Name')}" in big]
    assert scans, json.dumps(plan)[:2000]
    # A partition holding many records is read through an index (one with a handful, or the
    # empty ones of days to come, may be scanned: that costs nothing).
    seq = [n["Relation Name"] for n in scans if n["Node Type"] == "Seq Scan"]
    assert seq == [], json.dumps(plan)[:3000]
    used = {n["Index Name"] for n in nodes(plan) if "Index Name" in n}
    assert any(name.endswith(f"_{index}_idx") or name == f"trail_{index}" for name in used), used


# -- partitions -------------------------------------------------------------------------------


def partitions(dsn: str) -> list[str]:
    rows = fetch(
        dsn,
        "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'pgobs.trail'::regclass ORDER BY 1",
    )
    return [r[0] for r in rows]


def test_partitions_rotate_and_an_expired_one_is_dropped(dsn: str) -> None:
    today = scalar(dsn, "SELECT (now() AT TIME ZONE 'UTC')::date")
    ahead = {f"trail_p{today + timedelta(days=d):%Y%m%d}" for d in range(8)}
    assert ahead <= set(partitions(dsn))  # made by the migration
    # A record of 100 days ago, and one of 30 days ago: each day gets its partition.
    for days in (100, 30):
        execute(
            dsn,
            "INSERT INTO pgobs.trail (at, kind, status) VALUES (now() - make_interval(days => %s), "
            "'event', 'received')",
            (days,),
        )
        assert (
            scalar(dsn, "SELECT count(*) FROM pgobs.trail_default") == 1
        )  # no partition yet: the default one keeps it
        execute(
            dsn,
            "SELECT pgobs.trail_partition(((now() - make_interval(days => %s)) "
            "AT TIME ZONE 'UTC')::date)",
            (days,),
        )
        assert scalar(dsn, "SELECT count(*) FROM pgobs.trail_default") == 0  # moved in
    old = f"trail_p{today - timedelta(days=100):%Y%m%d}"
    kept = f"trail_p{today - timedelta(days=30):%Y%m%d}"
    assert {old, kept} <= set(partitions(dsn))

    assert scalar(dsn, "SELECT pgobs.maintain_audit(true, 100)") == 1
    assert old in partitions(dsn)  # a dry run changes nothing
    assert scalar(dsn, "SELECT pgobs.maintain_audit(false, 100)") == 1
    found = set(partitions(dsn))
    assert old not in found and kept in found
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail") == 1
    assert scalar(dsn, "SELECT pgobs.maintain_audit(false, 100)") == 0

    # A shorter retention from the settings drops the 30-day-old one too.
    execute(dsn, "CREATE TABLE IF NOT EXISTS pgobs.settings (key text PRIMARY KEY, value text)")
    execute(
        dsn,
        "INSERT INTO pgobs.settings VALUES ('audit_retention', '20 days') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    assert scalar(dsn, "SELECT pgobs.maintain_audit(false, 100)") == 1
    assert kept not in partitions(dsn)
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail") == 0


def test_maintenance_creates_the_coming_week(dsn: str) -> None:
    today = scalar(dsn, "SELECT (now() AT TIME ZONE 'UTC')::date")
    last = f"trail_p{today + timedelta(days=7):%Y%m%d}"
    execute(dsn, f"DROP TABLE pgobs.{last}")
    assert last not in partitions(dsn)
    execute(dsn, "SELECT pgobs.maintain_audit(false, 100)")
    assert last in partitions(dsn)
    # Records written now land in today's partition, not the default one.
    execute(dsn, "INSERT INTO pgobs.trail (kind, status) VALUES ('action', 'delivered')")
    where = scalar(dsn, "SELECT tableoid::regclass::text FROM pgobs.trail")
    assert where == f"pgobs.trail_p{today:%Y%m%d}"


def test_big_event_data_is_kept_bounded(dsn: str) -> None:
    big = {"id": 7, "status": "paid", "blob": "x" * 20000, "nested": {"a": 1}, "long": "y" * 300}
    kept = scalar(dsn, "SELECT pgobs.trail_data(%s)", (Jsonb(big),))
    assert kept == {"id": 7, "status": "paid"}
    small = {"id": 7, "nested": {"a": [1, 2]}}
    assert scalar(dsn, "SELECT pgobs.trail_data(%s)", (Jsonb(small),)) == small


def test_other_outcomes_are_recorded_in_a_statement_of_their_own(dsn: str) -> None:
    """pgobs.record_trail: how the dedup and circuit steps record deduplicated and deferred."""
    event = scalar(dsn, "SELECT pgobs.emit('Order', 'paid', '42', '{\"total\": 5}')")
    written = scalar(
        dsn,
        "WITH recorded AS (SELECT pgobs.record_trail('deduplicated', ARRAY[%s, 999]::bigint[], "
        "ARRAY['obs-a', 'obs-b'], ARRAY['hook', 'hook'], ARRAY['webhook', 'webhook'], "
        "ARRAY['seen 2 s ago', NULL]) AS n) SELECT n FROM recorded",
        (event,),
    )
    assert written == 2
    rows = fetch(
        dsn,
        "SELECT status, entity_type, entity_id, observer, message FROM pgobs.trail "
        "ORDER BY event_id",
    )
    assert rows == [
        ("deduplicated", "Order", "42", "obs-a", "seen 2 s ago"),
        ("deduplicated", None, None, "obs-b", None),  # an event already purged
    ]
    with pytest.raises(psycopg.errors.RaiseException, match="not an outcome status"):
        execute(
            dsn,
            "SELECT pgobs.record_trail('exploded', '{}'::bigint[], '{}', '{}', '{}', '{}')",
        )


def test_a_batch_record_keeps_its_jobs_when_its_day_gets_a_partition(dsn: str) -> None:
    """Deliveries written while their day has no partition (maintenance stopped for a week)
    wait in the default partition; pgobs.trail_partition moves them into the day's partition
    and must move their jobs (batch_*) too, or pgobs.trail_records shows an empty record."""
    today = scalar(dsn, "SELECT (now() AT TIME ZONE 'UTC')::date")
    execute(dsn, f"DROP TABLE pgobs.trail_p{today:%Y%m%d}")
    execute(
        dsn,
        "INSERT INTO pgobs.trail (kind, status, observer, action, batch_event_ids, "
        "batch_job_ids, batch_entity_ids, batch_attempts, batch_status_codes, "
        "batch_durations_ms, batch_terms) VALUES ('action', 'delivered', 'obs-a', 'hook', "
        "'{1,2}', '{10,11}', '{e1,e2}', '{1,1}', '{200,200}', '{1.5,2.5}', "
        "'{event_id=1,event_id=2,job_id=10,job_id=11,entity_id=e1,entity_id=e2,attempt=1,"
        "status_code=200}')",
    )
    before = fetch(dsn, "SELECT seq, job_id, entity_id FROM pgobs.trail_records ORDER BY seq")
    assert before == [(1, 10, "e1"), (2, 11, "e2")]
    execute(dsn, "SELECT pgobs.maintain_audit(false, 100)")
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail_default") == 0  # moved in
    after = fetch(dsn, "SELECT seq, job_id, entity_id FROM pgobs.trail_records ORDER BY seq")
    assert after == before
    assert scalar(dsn, "SELECT count(*) FROM pgobs.trail WHERE terms @> '{job_id=11}'") == 1
