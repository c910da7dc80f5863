"""The capture trigger and SQL API against a real Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.support import execute, fetch, scalar


def events(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT id, txid::text::bigint AS txid, entity_type, entity_id, event_type, data, "
            "old_data, changed_fields, tenant, actor FROM pgobs.events ORDER BY id"
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, total numeric)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def test_insert_update_delete_and_noop_update(orders: str) -> None:
    execute(orders, "INSERT INTO orders (status, total) VALUES ('new', 10)")
    execute(orders, "UPDATE orders SET status = 'paid'")
    execute(orders, "UPDATE orders SET status = 'paid'")  # changes nothing: no event
    execute(orders, "DELETE FROM orders")
    got = events(orders)
    assert [e["event_type"] for e in got] == ["INSERT", "UPDATE", "DELETE"]
    ins, upd, dele = got
    assert ins["entity_type"] == "Order" and ins["entity_id"] == "1"
    assert ins["data"] == {"id": 1, "status": "new", "total": 10} and ins["old_data"] is None
    assert upd["data"]["status"] == "paid" and upd["old_data"]["status"] == "new"
    assert upd["changed_fields"] == ["status"]
    assert dele["data"] is None and dele["old_data"]["status"] == "paid"


def test_txid_is_the_writers_transaction(orders: str) -> None:
    with psycopg.connect(orders) as conn:
        conn.execute("INSERT INTO orders (status) VALUES ('a'), ('b')")
        writer = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        conn.commit()
    assert writer is not None
    assert {e["txid"] for e in events(orders)} == {writer[0]}


def test_tenant_and_actor_come_from_session_settings(orders: str) -> None:
    with psycopg.connect(orders) as conn:
        conn.execute("SET LOCAL pgobs.tenant = 'acme'")
        conn.execute("SET LOCAL pgobs.actor = 'user:42'")
        conn.execute("INSERT INTO orders (status) VALUES ('x')")
    (event,) = events(orders)
    assert (event["tenant"], event["actor"]) == ("acme", "user:42")


def test_odd_values_never_break_the_write(dsn: str) -> None:
    execute(
        dsn,
        "CREATE TABLE odd (k text PRIMARY KEY, n numeric, f float8, r real, j jsonb, js json, "
        "t text, arr int[], ts timestamptz, b bytea)",
    )
    execute(dsn, "SELECT pgobs.track('odd')")
    deep = "[" * 2000 + "]" * 2000
    rows: list[tuple[Any, ...]] = [
        ("nan", "NaN", float("nan"), float("inf"), None, None, None, None, "infinity", None),
        (
            "neg",
            "-Infinity",
            float("-inf"),
            float("-inf"),
            None,
            None,
            None,
            None,
            "-infinity",
            None,
        ),
        ("deep", 1, 1.0, 1.0, deep, deep, None, None, None, None),
        ("huge", 1, 1.0, 1.0, None, None, "x" * 20_000_000, None, None, b"\x00" * 1000),
        (
            "uni",
            1,
            1.0,
            1.0,
            '{"k": "\\u00e9\\ud83d\\ude00"}',
            '{"a": "\\u0000"}',
            "héllo ☃ 😀 \u202e",
            [1, None, 3],
            None,
            None,
        ),
    ]
    with psycopg.connect(dsn) as conn:
        for row in rows:
            conn.execute("INSERT INTO odd VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
        conn.execute("UPDATE odd SET t = 'y' WHERE k = 'huge'")
        conn.execute("DELETE FROM odd")
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == len(rows) * 2 + 1
    nan = scalar(
        dsn, "SELECT data FROM pgobs.events WHERE entity_id = 'nan' AND event_type = 'INSERT'"
    )
    assert nan["n"] == "NaN" and nan["f"] == "NaN"
    assert scalar(dsn, "SELECT changed_fields FROM pgobs.events WHERE event_type = 'UPDATE'") == [
        "t"
    ]


def test_unrepresentable_row_is_recorded_with_the_reason(dsn: str) -> None:
    """A row over jsonb's size limit still writes, and its event says why it has no data."""
    execute(dsn, "CREATE TABLE big (id int PRIMARY KEY, a text, b text)")
    execute(dsn, "SELECT pgobs.track('big')")
    execute(
        dsn,
        "INSERT INTO big SELECT 1, repeat('a', 140000000), repeat('b', 140000000) "
        "UNION ALL SELECT 2, 'a', 'b'",
    )
    assert scalar(dsn, "SELECT count(*) FROM big") == 2
    # the huge row's event says why it has no data; the statement's other row is captured whole
    assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == 2
    assert scalar(dsn, "SELECT data ? '_pgobs_error' FROM pgobs.events WHERE entity_id IS NULL")
    assert scalar(dsn, "SELECT data FROM pgobs.events WHERE entity_id = '2'") == {
        "id": 2,
        "a": "a",
        "b": "b",
    }


def test_emit_writes_a_custom_event(dsn: str) -> None:
    event_id = scalar(dsn, "SELECT pgobs.emit('User', 'signed_up', '7', '{\"plan\": \"pro\"}')")
    (event,) = events(dsn)
    assert event["id"] == event_id
    assert (event["entity_type"], event["event_type"], event["entity_id"]) == (
        "User",
        "signed_up",
        "7",
    )
    assert event["data"] == {"plan": "pro"}


def test_untrack_stops_capture(orders: str) -> None:
    execute(orders, "INSERT INTO orders (status) VALUES ('one')")
    execute(orders, "SELECT pgobs.untrack('orders')")
    execute(orders, "INSERT INTO orders (status) VALUES ('two')")
    assert len(events(orders)) == 1


def test_track_picks_the_primary_key_and_rejects_bad_operations(dsn: str) -> None:
    execute(dsn, "CREATE TABLE items (sku text PRIMARY KEY, qty int)")
    execute(dsn, "SELECT pgobs.track('items', 'Item', operations => ARRAY['insert'])")
    execute(dsn, "INSERT INTO items VALUES ('A-1', 1)")
    execute(dsn, "UPDATE items SET qty = 2")
    (event,) = events(dsn)
    assert event["entity_id"] == "A-1"
    with pytest.raises(psycopg.errors.RaiseException, match="operations must be among"):
        execute(dsn, "SELECT pgobs.track('items', 'Item', operations => ARRAY['SELECT'])")


WAITING = "SELECT pg_advisory_lock(2024061502, 0)"  # what a waiting leader's wake-up lock holds


def test_insert_notifies_pgobs_events(orders: str) -> None:
    with psycopg.connect(orders, autocommit=True) as listener:
        listener.execute(WAITING)
        listener.execute("LISTEN pgobs_events")
        execute(orders, "INSERT INTO orders (status) VALUES ('x')")
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == ["pgobs_events"]


def notifications_before_marker(dsn: str, write: str) -> list[str]:
    """Payloads on pgobs_events from ``write``, up to a marker sent after it (commit order)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgobs_events")
        execute(dsn, write)
        execute(dsn, "NOTIFY pgobs_events, 'marker'")
        got = []
        for note in listener.notifies(timeout=5):
            if note.payload == "marker":
                return got
            got.append(note.payload)
    raise AssertionError("the marker never arrived")


def test_writers_wake_only_a_waiting_listener(orders: str) -> None:
    insert = "INSERT INTO orders (status) VALUES ('x')"
    assert notifications_before_marker(orders, insert) == []  # no listener: no NOTIFY
    with psycopg.connect(orders, autocommit=True) as waiting:
        waiting.execute(WAITING)
        assert notifications_before_marker(orders, insert) == [""]
        waiting.execute("SELECT pg_advisory_unlock_all()")  # busy: no NOTIFY
        assert notifications_before_marker(orders, insert) == []
    assert notifications_before_marker(orders, "SELECT pgobs.emit('X', 'e')") == []


def test_a_role_without_rights_on_pgobs_is_captured(orders: str) -> None:
    """The application's own role needs rights on its table only, not on schema pgobs."""
    role = f"pgobs_app_{uuid.uuid4().hex[:8]}"
    execute(orders, f"CREATE ROLE {role}")
    try:
        execute(orders, f"GRANT USAGE ON SCHEMA public TO {role}")
        execute(orders, f"GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO {role}")
        execute(orders, f"GRANT USAGE ON SEQUENCE orders_id_seq TO {role}")
        with psycopg.connect(orders) as conn:
            conn.execute(f"SET ROLE {role}")
            conn.execute("INSERT INTO orders (status) VALUES ('app')")
            conn.execute("UPDATE orders SET status = 'paid'")
            conn.commit()
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO pgobs.events (entity_type, event_type) VALUES ('x', 'y')")
            conn.rollback()
        # Custom events need the application role pgobs_app, and nothing more.
        execute(orders, f"GRANT pgobs_app TO {role}")
        with psycopg.connect(orders) as conn:
            conn.execute(f"SET ROLE {role}")
            conn.execute("SELECT pgobs.emit('Custom', 'ping')")
        assert [e["event_type"] for e in events(orders)] == ["INSERT", "UPDATE", "ping"]
    finally:
        execute(orders, f"DROP OWNED BY {role}")
        execute(orders, f"DROP ROLE {role}")


def test_pgobs_own_tables_cannot_be_tracked(dsn: str) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="one of pgobs' own tables"):
        execute(dsn, "SELECT pgobs.track('pgobs.events')")


def test_track_installs_its_triggers_and_untrack_removes_them(orders: str) -> None:
    names = (
        "SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger "
        "WHERE tgrelid = 'orders'::regclass"
    )
    assert scalar(orders, names) == [
        "pgobs_capture_delete",
        "pgobs_capture_insert",
        "pgobs_capture_truncate",
        "pgobs_capture_update",
        "pgobs_wake",
    ]
    execute(orders, "SELECT pgobs.track('orders', 'Order', operations => ARRAY['UPDATE'])")
    assert scalar(orders, names) == ["pgobs_capture_update", "pgobs_wake"]
    execute(orders, "SELECT pgobs.untrack('orders')")
    assert scalar(orders, names) is None


def test_columns_named_like_sql_aliases_are_captured(dsn: str) -> None:
    """Set-based capture reads whole rows; a column named like its alias must not shadow it."""
    execute(dsn, "CREATE TABLE tricky (id int PRIMARY KEY, captured text, n int, d text)")
    execute(dsn, "SELECT pgobs.track('tricky')")
    execute(dsn, "INSERT INTO tricky VALUES (1, 'c', 2, 'x'), (2, 'c2', 3, 'y')")
    execute(dsn, "DELETE FROM tricky WHERE id = 2")
    got = events(dsn)
    assert [e["data"] for e in got[:2]] == [
        {"id": 1, "captured": "c", "n": 2, "d": "x"},
        {"id": 2, "captured": "c2", "n": 3, "d": "y"},
    ]
    assert got[2]["old_data"] == {"id": 2, "captured": "c2", "n": 3, "d": "y"}
    assert [e["entity_id"] for e in got] == ["1", "2", "2"]


# -- no subtransaction per statement (issue 7, finding 7c) --------------------------------------


def test_a_thousand_statement_transaction_uses_no_subtransaction(orders: str) -> None:
    """Past 64 subtransactions in one transaction, every session's visibility checks slow down
    (the subxid cache overflows). A row written in a subtransaction carries that subtransaction's
    xid as xmin, so events written without one all carry the writer's own xid."""
    with psycopg.connect(orders) as conn:
        for n in range(1000):
            conn.execute("INSERT INTO orders (status, total) VALUES ('new', %s)", (n,))
        conn.execute("UPDATE orders SET status = 'paid'")  # 1,000 rows, one row trigger each
        for n in range(1, 101):
            conn.execute("DELETE FROM orders WHERE id = %s", (n,))
        writer = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.commit()
    assert writer is not None
    xmins = scalar(orders, "SELECT array_agg(DISTINCT xmin::text) FROM pgobs.events")
    assert xmins == [writer[0]]
    assert scalar(orders, "SELECT count(*) FROM pgobs.events") == 2100


def test_only_a_row_jsonb_cannot_hold_takes_the_guarded_path(dsn: str) -> None:
    """json with \\u0000 (jsonb rejects it) is captured with the reason, beside ordinary rows of
    the same statement, which keep their data."""
    execute(dsn, "CREATE TABLE docs (id int PRIMARY KEY, body json)")
    execute(dsn, "SELECT pgobs.track('docs')")
    execute(dsn, """INSERT INTO docs VALUES (1, '{"a": "\\u0000"}'), (2, '{"a": "\\u00e9"}')""")
    execute(dsn, "UPDATE docs SET body = '{\"b\": 1}' WHERE id = 1")
    got = {(e["event_type"], e["entity_id"]): e for e in events(dsn)}
    assert got[("INSERT", None)]["data"] == {"_pgobs_error": "unsupported Unicode escape sequence"}
    assert got[("INSERT", "2")]["data"] == {"id": 2, "body": {"a": "é"}}
    update = got[("UPDATE", "1")]
    assert update["data"] == {"id": 1, "body": {"b": 1}} and "_pgobs_error" in update["old_data"]


# -- keys ----------------------------------------------------------------------------------------


def test_a_table_without_a_primary_key_needs_an_id_column(dsn: str) -> None:
    execute(dsn, "CREATE TABLE readings (sensor text, at timestamptz, value numeric)")
    with pytest.raises(psycopg.errors.RaiseException, match="has no primary key") as refused:
        execute(dsn, "SELECT pgobs.track('readings')")
    assert "--id-column" in (refused.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.RaiseException, match="has no column nope"):
        execute(dsn, "SELECT pgobs.track('readings', id_column => 'sensor, nope')")
    execute(dsn, "SELECT pgobs.track('readings', id_column => 'sensor')")
    execute(dsn, "INSERT INTO readings VALUES ('s1', now(), 1.5)")
    assert [e["entity_id"] for e in events(dsn)] == ["s1"]


def test_composite_keys_give_the_values_in_key_order(dsn: str) -> None:
    """The primary key's columns in key order (not table order), joined by ','; a ',' or '%'
    inside a value is percent-encoded so two keys never give the same id."""
    execute(
        dsn, "CREATE TABLE lines (qty int, line int, order_ref text, PRIMARY KEY (order_ref, line))"
    )
    execute(dsn, "SELECT pgobs.track('lines')")
    execute(dsn, "INSERT INTO lines VALUES (1, 1, 'A-7'), (1, 2, 'a,b%c')")
    execute(dsn, "UPDATE lines SET qty = 2 WHERE line = 1")
    execute(dsn, "DELETE FROM lines WHERE line = 2")
    assert [(e["event_type"], e["entity_id"]) for e in events(dsn)] == [
        ("INSERT", "A-7,1"),
        ("INSERT", "a%2Cb%25c,2"),
        ("UPDATE", "A-7,1"),
        ("DELETE", "a%2Cb%25c,2"),
    ]
    execute(dsn, "SELECT pgobs.track('lines', id_column => 'line,order_ref')")
    execute(dsn, "INSERT INTO lines VALUES (1, 3, 'B')")
    assert events(dsn)[-1]["entity_id"] == "3,B"


# -- TRUNCATE ------------------------------------------------------------------------------------


def test_truncate_is_an_event(orders: str) -> None:
    execute(orders, "INSERT INTO orders (status) VALUES ('x')")
    execute(orders, "TRUNCATE orders")
    truncate = events(orders)[-1]
    assert (truncate["entity_type"], truncate["event_type"], truncate["entity_id"]) == (
        "Order",
        "TRUNCATE",
        None,
    )
    assert truncate["data"] == {"table": "public.orders"}
    execute(orders, "SELECT pgobs.track('orders', 'Order', operations => ARRAY['INSERT'])")
    execute(orders, "TRUNCATE orders")
    assert len(events(orders)) == 2


def test_emit_refuses_the_event_types_of_capture(dsn: str) -> None:
    for reserved in ("INSERT", "update", "Delete", "TRUNCATE"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="reserved"):
            execute(dsn, "SELECT pgobs.emit('Order', %s, '1', '{\"total\": 1000000}')", (reserved,))
    # Nor anything that reads like one in a log: a type is a name.
    for lookalike in ("INSERT ", " insert", "Insert\t", "", "order paid"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a name"):
            execute(dsn, "SELECT pgobs.emit('Order', %s, '1', '{}')", (lookalike,))
    assert events(dsn) == []


# -- partitioned tables (issue 8, finding 3) -----------------------------------------------------


@pytest.fixture
def regions(dsn: str) -> str:
    execute(
        dsn,
        "CREATE TABLE shipments (id int, region text, state text, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region)",
    )
    execute(dsn, "CREATE TABLE shipments_eu PARTITION OF shipments FOR VALUES IN ('eu')")
    execute(dsn, "CREATE TABLE shipments_us PARTITION OF shipments FOR VALUES IN ('us')")
    execute(dsn, "SELECT pgobs.track('shipments', 'Shipment', id_column => 'id')")
    return dsn


def test_an_update_that_moves_a_row_to_another_partition_is_one_update(regions: str) -> None:
    execute(regions, "INSERT INTO shipments VALUES (1, 'eu', 'new'), (2, 'eu', 'new')")
    execute(regions, "UPDATE shipments SET region = 'us', state = 'moved'")
    got = events(regions)
    assert [(e["event_type"], e["entity_id"]) for e in got] == [
        ("INSERT", "1"),
        ("INSERT", "2"),
        ("UPDATE", "1"),
        ("UPDATE", "2"),
    ]
    moved = got[2]
    assert moved["old_data"] == {"id": 1, "region": "eu", "state": "new"}
    assert moved["data"] == {"id": 1, "region": "us", "state": "moved"}
    assert moved["changed_fields"] == ["region", "state"]


def test_partitions_existing_and_future_are_captured_however_written(regions: str) -> None:
    execute(regions, "CREATE TABLE shipments_asia PARTITION OF shipments FOR VALUES IN ('asia')")
    execute(regions, "INSERT INTO shipments_asia VALUES (1, 'asia', 'new')")  # the partition
    execute(regions, "INSERT INTO shipments VALUES (2, 'eu', 'new')")  # through the parent
    execute(regions, "UPDATE shipments_eu SET state = 'paid'")
    execute(regions, "UPDATE shipments SET region = 'asia' WHERE id = 2")
    execute(regions, "DELETE FROM shipments_asia WHERE id = 1")
    assert [(e["event_type"], e["entity_id"], e["entity_type"]) for e in events(regions)] == [
        ("INSERT", "1", "Shipment"),
        ("INSERT", "2", "Shipment"),
        ("UPDATE", "2", "Shipment"),
        ("UPDATE", "2", "Shipment"),
        ("DELETE", "1", "Shipment"),
    ]


def test_moves_in_a_subpartition_and_a_dropped_move_are_captured(regions: str) -> None:
    execute(
        regions,
        "CREATE TABLE shipments_ap PARTITION OF shipments FOR VALUES IN ('jp', 'kr') "
        "PARTITION BY LIST (region)",
    )
    execute(regions, "CREATE TABLE shipments_jp PARTITION OF shipments_ap FOR VALUES IN ('jp')")
    execute(regions, "CREATE TABLE shipments_kr PARTITION OF shipments_ap FOR VALUES IN ('kr')")
    execute(regions, "SELECT pgobs.track('shipments', 'Shipment', id_column => 'id')")
    execute(regions, "INSERT INTO shipments VALUES (1, 'jp', 'new'), (2, 'eu', 'new')")
    execute(regions, "UPDATE shipments_ap SET region = 'kr'")  # a move inside the sub-tree
    # A BEFORE INSERT trigger on the destination drops the moved row: the row is gone.
    execute(
        regions,
        "CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NULL; END $$",
    )
    execute(
        regions,
        "CREATE TRIGGER drop_row BEFORE INSERT ON shipments_us "
        "FOR EACH ROW EXECUTE FUNCTION drop_row()",
    )
    execute(regions, "UPDATE shipments SET region = 'us' WHERE id = 2")
    got = [(e["event_type"], e["entity_id"]) for e in events(regions)]
    assert got == [("INSERT", "1"), ("INSERT", "2"), ("UPDATE", "1"), ("DELETE", "2")]
    assert events(regions)[2]["data"]["region"] == "kr"


def test_a_partition_of_a_tracked_table_is_refused(regions: str) -> None:
    for call in ("track", "untrack"):
        with pytest.raises(psycopg.errors.RaiseException) as refused:
            execute(regions, f"SELECT pgobs.{call}('shipments_eu')")
        assert "shipments_eu is a partition of shipments, which is tracked" in str(refused.value)
        assert "untrack shipments" in (refused.value.diag.message_hint or "")
    execute(regions, "SELECT pgobs.untrack('shipments')")
    execute(regions, "SELECT pgobs.track('shipments_eu', id_column => 'id')")
    with pytest.raises(psycopg.errors.RaiseException, match="shipments_eu is tracked on its own"):
        execute(regions, "SELECT pgobs.track('shipments', id_column => 'id')")
    assert (
        scalar(
            regions,
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shipments'::regclass",
        )
        == 0
    )


def test_truncating_a_partitioned_table_is_one_event(regions: str) -> None:
    execute(regions, "INSERT INTO shipments VALUES (1, 'eu', 'new'), (2, 'us', 'new')")
    execute(regions, "TRUNCATE shipments")
    execute(regions, "TRUNCATE shipments_us")
    with psycopg.connect(regions) as conn:  # the tree's mark ends with the statement
        conn.execute("TRUNCATE shipments")
        conn.execute("TRUNCATE shipments_eu")
    truncates = [e["data"] for e in events(regions) if e["event_type"] == "TRUNCATE"]
    assert truncates == [
        {"table": "public.shipments"},
        {"table": "public.shipments_us"},
        {"table": "public.shipments"},
        {"table": "public.shipments_eu"},
    ]


def test_untrack_removes_every_trigger_of_a_tree(regions: str) -> None:
    count = (
        "SELECT count(*) FROM pg_trigger t JOIN pg_partition_tree('shipments') p "
        "ON p.relid = t.tgrelid WHERE t.tgname LIKE 'pgobs%'"
    )
    assert scalar(regions, count) > 0
    execute(regions, "SELECT pgobs.untrack('shipments')")
    assert scalar(regions, count) == 0


def test_partitions_added_after_track_are_captured_whole(regions: str) -> None:
    """A sub-partitioned partition created after `track` pairs its moves into UPDATEs, and a
    partition created or attached later truncates with an event, like the first ones."""
    execute(
        regions,
        "CREATE TABLE shipments_ap PARTITION OF shipments FOR VALUES IN ('jp', 'kr') "
        "PARTITION BY LIST (region)",
    )
    execute(regions, "CREATE TABLE shipments_jp PARTITION OF shipments_ap FOR VALUES IN ('jp')")
    execute(regions, "CREATE TABLE shipments_kr (id int, region text, state text)")
    execute(regions, "ALTER TABLE shipments_kr ADD PRIMARY KEY (id, region)")
    execute(regions, "ALTER TABLE shipments_ap ATTACH PARTITION shipments_kr FOR VALUES IN ('kr')")
    execute(regions, "INSERT INTO shipments VALUES (1, 'jp', 'new')")
    execute(regions, "UPDATE shipments_ap SET region = 'kr'")  # a move inside the new sub-tree
    execute(regions, "TRUNCATE shipments_kr")
    got = [(e["event_type"], e["entity_id"], e["data"]) for e in events(regions)]
    assert got == [
        ("INSERT", "1", {"id": 1, "region": "jp", "state": "new"}),
        ("UPDATE", "1", {"id": 1, "region": "kr", "state": "new"}),
        ("TRUNCATE", None, {"table": "public.shipments_kr"}),
    ]


def test_a_detached_partition_stops_emitting(regions: str) -> None:
    execute(regions, "ALTER TABLE shipments DETACH PARTITION shipments_us")
    execute(regions, "INSERT INTO shipments_us VALUES (1, 'us', 'new')")
    execute(regions, "TRUNCATE shipments_us")
    assert events(regions) == []
    assert (
        scalar(regions, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shipments_us'::regclass")
        == 0
    )
    execute(regions, "TRUNCATE shipments_eu")  # the tree keeps its own
    assert [e["event_type"] for e in events(regions)] == ["TRUNCATE"]


def test_a_table_tracked_on_its_own_cannot_join_a_tracked_tree(regions: str) -> None:
    execute(
        regions,
        "CREATE TABLE shipments_fr (id int, region text, state text, PRIMARY KEY (id, region))",
    )
    execute(regions, "SELECT pgobs.track('shipments_fr')")
    with pytest.raises(psycopg.errors.RaiseException, match="captured twice") as refused:
        execute(regions, "ALTER TABLE shipments ATTACH PARTITION shipments_fr FOR VALUES IN ('fr')")
    assert "untrack public.shipments_fr first" in (refused.value.diag.message_hint or "")
    execute(regions, "SELECT pgobs.untrack('shipments_fr')")
    execute(regions, "ALTER TABLE shipments ATTACH PARTITION shipments_fr FOR VALUES IN ('fr')")
    execute(regions, "INSERT INTO shipments_fr VALUES (1, 'fr', 'new')")
    assert [e["entity_type"] for e in events(regions)] == ["Shipment"]


def test_tracking_arguments_survive_a_resync(dsn: str) -> None:
    """Re-tracking after partition DDL keeps the entity type, key columns and operations the
    tree was tracked with, whatever characters they hold."""
    execute(
        dsn,
        'CREATE TABLE "Ventes" ("clé" int, "année" int, x text, PRIMARY KEY ("clé", "année")) '
        'PARTITION BY RANGE ("année")',
    )
    execute(dsn, 'CREATE TABLE ventes_24 PARTITION OF "Ventes" FOR VALUES FROM (2024) TO (2025)')
    execute(
        dsn,
        "SELECT pgobs.track('\"Ventes\"', 'Vente\\été', id_column => 'clé,année', "
        "operations => ARRAY['INSERT', 'TRUNCATE'])",
    )
    before = fetch(dsn, "SELECT * FROM pgobs.tracked_arguments('\"Ventes\"')")
    assert before == [("Vente\\été", "clé,année", ["INSERT", "TRUNCATE"])]
    execute(dsn, 'CREATE TABLE ventes_25 PARTITION OF "Ventes" FOR VALUES FROM (2025) TO (2026)')
    assert fetch(dsn, "SELECT * FROM pgobs.tracked_arguments('\"Ventes\"')") == before
    execute(dsn, "INSERT INTO \"Ventes\" VALUES (7, 2025, 'a')")
    execute(dsn, "UPDATE \"Ventes\" SET x = 'b'")  # not tracked: no event
    execute(dsn, "TRUNCATE ventes_25")
    assert [(e["entity_type"], e["event_type"], e["entity_id"]) for e in events(dsn)] == [
        ("Vente\\été", "INSERT", "7,2025"),
        ("Vente\\été", "TRUNCATE", None),
    ]


def test_session_settings_cannot_hide_changes_of_a_partitioned_table(regions: str) -> None:
    """Any role may set pgobs.* settings: a writer that imitates an UPDATE in progress or a
    TRUNCATE of the whole tree still gets its DELETE and TRUNCATE captured."""
    root = scalar(regions, "SELECT 'shipments'::regclass::oid")
    execute(regions, "INSERT INTO shipments VALUES (1, 'eu', 'new')")
    with psycopg.connect(regions) as conn:
        for name in (f"pgobs.moving_{root}_1", f"pgobs.truncating_{root}"):
            conn.execute("SELECT set_config(%s, 'on', false)", (name,))
        conn.execute("SELECT set_config(%s, %s, false)", (f"pgobs.moved_{root}_1", '{"id": 9}'))
        conn.execute("DELETE FROM shipments_eu")
        conn.execute("INSERT INTO shipments VALUES (2, 'eu', 'new')")
        conn.execute("TRUNCATE shipments_eu")
    assert [(e["event_type"], e["entity_id"]) for e in events(regions)] == [
        ("INSERT", "1"),
        ("DELETE", "1"),
        ("INSERT", "2"),
        ("TRUNCATE", None),
    ]


def test_columns_named_like_capture_variables_are_captured(dsn: str) -> None:
    """A table column named like a variable of the capture functions (marker, tenant, actor)
    once made every INSERT and DELETE of the application fail as ambiguous."""
    execute(
        dsn,
        "CREATE TABLE tags (id int PRIMARY KEY, marker text, tenant text, actor text, "
        "key_columns text, single_key text, doc json)",
    )
    execute(dsn, "SELECT pgobs.track('tags', 'Tag')")
    execute(dsn, "INSERT INTO tags VALUES (1, 'm', 't', 'a', 'k', 's', '{\"x\": 1}')")
    execute(dsn, "UPDATE tags SET marker = 'n'")
    execute(dsn, "DELETE FROM tags")
    rows = fetch(dsn, "SELECT event_type, entity_id, tenant FROM pgobs.events ORDER BY id")
    assert rows == [("INSERT", "1", None), ("UPDATE", "1", None), ("DELETE", "1", None)]


def test_a_role_cannot_get_its_own_table_tracked_by_partition_ddl(dsn: str) -> None:
    """The partition sync runs as pgobs' owner after anyone's DDL: a trigger merely named
    pgobs_capture on a role's own partitioned table, with the arguments capture would have, once
    made it install pgobs' capture there and mint events of any entity type; a look-alike on a
    partition made every CREATE TABLE and ALTER TABLE in the database fail."""
    role = f"pgobs_ddl_{uuid.uuid4().hex[:8]}"
    execute(dsn, f"CREATE ROLE {role}")
    try:
        execute(dsn, f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET ROLE {role}")
            conn.execute(
                "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE TABLE forged (id int, r text, PRIMARY KEY (id, r)) PARTITION BY LIST (r)"
            )
            conn.execute("CREATE TABLE forged_a PARTITION OF forged FOR VALUES IN ('a')")
            conn.execute(
                "CREATE TRIGGER pgobs_capture AFTER INSERT ON forged FOR EACH ROW "
                "EXECUTE FUNCTION noop('Order', '0', 'INSERT,TRUNCATE', 'id')"
            )
            conn.execute(
                "CREATE TRIGGER pgobs_capture_x AFTER INSERT ON forged_a FOR EACH ROW "
                "EXECUTE FUNCTION noop()"
            )
            conn.execute("CREATE TABLE forged_b PARTITION OF forged FOR VALUES IN ('b')")
            conn.execute("INSERT INTO forged VALUES (1000000, 'b')")
        execute(dsn, "CREATE TABLE unrelated (id int)")  # everyone's DDL still works
        assert events(dsn) == []
        pgobs_triggers = (
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE p.pronamespace = 'pgobs'::regnamespace "
            "AND t.tgrelid IN ('forged'::regclass, 'forged_a'::regclass, 'forged_b'::regclass)"
        )
        assert scalar(dsn, pgobs_triggers) == 0
    finally:
        execute(dsn, f"DROP OWNED BY {role}")
        execute(dsn, f"DROP ROLE {role}")


def test_partition_ddl_keeps_key_columns_and_entity_types_of_any_spelling(dsn: str) -> None:
    """Re-reading the tracked arguments split a key column named with a comma into two
    (adding a partition failed with 'has no column'), and an entity type holding a backslash
    followed by 000 made every CREATE TABLE and ALTER TABLE of the database fail."""
    execute(
        dsn,
        'CREATE TABLE odd ("a,b" int, " r" text, PRIMARY KEY ("a,b", " r")) '
        'PARTITION BY LIST (" r")',
    )
    execute(dsn, "CREATE TABLE odd_x PARTITION OF odd FOR VALUES IN ('x')")
    execute(dsn, "SELECT pgobs.track('odd', E'Ord\\\\000er')")
    execute(dsn, "CREATE TABLE odd_y PARTITION OF odd FOR VALUES IN ('y')")
    execute(dsn, "CREATE TABLE unrelated (id int)")
    execute(dsn, "INSERT INTO odd VALUES (1, 'y')")
    execute(dsn, "TRUNCATE odd_y")
    assert [(e["entity_type"], e["event_type"], e["entity_id"]) for e in events(dsn)] == [
        ("Ord\\000er", "INSERT", "1,y"),
        ("Ord\\000er", "TRUNCATE", None),
    ]


def test_partition_ddl_works_without_standard_conforming_strings(regions: str) -> None:
    """A session with standard_conforming_strings off (legacy applications) read the sync's
    '\\000' as a NUL byte: every CREATE TABLE and ALTER TABLE it ran failed."""
    with psycopg.connect(regions, autocommit=True) as conn:
        conn.execute("SET standard_conforming_strings = off")
        conn.execute("CREATE TABLE legacy (id int)")
        conn.execute("CREATE TABLE shipments_fr PARTITION OF shipments FOR VALUES IN ('fr')")
    execute(regions, "TRUNCATE shipments_fr")
    assert [e["event_type"] for e in events(regions)] == ["TRUNCATE"]


def test_ddl_outside_partitioned_tables_does_not_run_the_partition_sync(regions: str) -> None:
    """The sync walks every tracked tree (~100 ms with 1,000 partitions): it once ran after
    every CREATE TABLE and ALTER TABLE of the database, temporary tables included."""
    calls = "SELECT coalesce(pg_stat_get_xact_function_calls(%s::regproc), 0)"
    sync = "pgobs.sync_tracked_partitions"
    with psycopg.connect(regions) as conn:
        conn.execute("SET track_functions = 'all'")
        conn.execute("CREATE TEMP TABLE scratch (id int)")
        conn.execute("CREATE TABLE plain (id int)")
        conn.execute("ALTER TABLE plain ADD COLUMN note text")
        assert conn.execute(calls, (sync,)).fetchone() == (0,)
        conn.execute("CREATE TABLE shipments_fr PARTITION OF shipments FOR VALUES IN ('fr')")
        conn.execute("ALTER TABLE shipments DETACH PARTITION shipments_fr")
        assert conn.execute(calls, (sync,)).fetchone() == (2,)
