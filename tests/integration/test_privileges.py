"""Least privilege: the three pgobs roles, each held by a real login role, can do their job and
get "permission denied" for the rest; no other role can forge events or attach capture."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from tests.support import (
    Receiver,
    Worker,
    execute,
    fetch,
    pgobs_env,
    run_pgobs,
    scalar,
    wait_until,
)

FORGERIES = [
    "INSERT INTO pgobs.events (entity_type, event_type, data) VALUES ('Order', 'INSERT', '{}')",
    "SELECT pgobs.emit('Order', 'INSERT', '1', '{\"total\": 1000000}')",
    "SELECT pgobs.track('mine', 'Order')",
    "CREATE TRIGGER forge AFTER INSERT ON mine REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION pgobs.capture_rows('Order', 'id')",
    "CREATE TRIGGER forge AFTER UPDATE ON mine "
    "FOR EACH ROW EXECUTE FUNCTION pgobs.capture_update('Order', 'id')",
    "CREATE TRIGGER forge AFTER INSERT ON mine "
    "FOR EACH ROW EXECUTE FUNCTION pgobs.capture_partitioned('Order', '0', 'INSERT', 'id')",
    "CREATE TRIGGER forge BEFORE TRUNCATE ON mine "
    "FOR EACH STATEMENT EXECUTE FUNCTION pgobs.capture_truncate('Order', '0')",
    "SELECT pgobs.untrack('orders')",
    "SELECT pgobs.wake_listeners()",
    "SELECT pgobs.create_roles()",
]


@contextmanager
def login_role(dsn: str, *groups: str) -> Iterator[str]:
    """A login role of this test's own (roles are cluster-wide: a unique name, dropped after)
    that holds ``groups`` and may create tables in public; yields a DSN that logs in as it."""
    name = f"pgobs_login_{uuid.uuid4().hex[:10]}"
    execute(dsn, f"CREATE ROLE {name} LOGIN")
    try:
        for group in groups:
            execute(dsn, f"GRANT {group} TO {name}")
        execute(dsn, f"GRANT CREATE, USAGE ON SCHEMA public TO {name}")
        yield psycopg.conninfo.make_conninfo(dsn, user=name)
    finally:
        execute(dsn, f"DROP OWNED BY {name}")
        execute(dsn, f"DROP ROLE {name}")


def refused(dsn: str, statement: str) -> str:
    """The error ``statement`` gets (run in a transaction of its own); fails if it succeeds."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return type(exc).__name__
    raise AssertionError(f"allowed: {statement}")


def assert_cannot_forge(dsn: str) -> None:
    execute(dsn, "CREATE TABLE mine (id int PRIMARY KEY)")
    for statement in FORGERIES:
        expected = "InvalidParameterValue" if "emit(" in statement else "InsufficientPrivilege"
        if "emit(" in statement and not scalar(
            dsn, "SELECT has_function_privilege('pgobs.emit(text,text,text,jsonb)', 'EXECUTE')"
        ):
            expected = "InsufficientPrivilege"
        assert refused(dsn, statement) == expected, statement


@pytest.fixture
def orders(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, total numeric)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def test_nothing_of_pgobs_is_executable_by_public(dsn: str) -> None:
    """Every function, including those later migrations add, is revoked from PUBLIC."""
    public = scalar(
        dsn,
        "SELECT array_agg(p.proname::text) FROM pg_proc p "
        "WHERE p.pronamespace = 'pgobs'::regnamespace AND (p.proacl IS NULL OR EXISTS ("
        "  SELECT 1 FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0))",
    )
    assert public is None


def test_the_application_role_emits_and_cannot_forge(orders: str) -> None:
    with login_role(orders, "pgobs_app") as app:
        execute(app, "SELECT pgobs.emit('User', 'signed_up', '7', '{\"plan\": \"pro\"}')")
        assert_cannot_forge(app)
        for table in ("events", "jobs", "dlq", "audit", "trail"):
            assert refused(app, f"SELECT * FROM pgobs.{table}") == "InsufficientPrivilege"
    assert scalar(orders, "SELECT array_agg(event_type) FROM pgobs.events") == ["signed_up"]


def test_capture_needs_no_right_at_all(orders: str) -> None:
    """The application's writes are captured without any pgobs role."""
    with login_role(orders) as writer:
        name = scalar(writer, "SELECT current_user")
        execute(orders, f"GRANT INSERT, UPDATE ON orders TO {name}")
        execute(orders, f"GRANT USAGE ON SEQUENCE orders_id_seq TO {name}")
        execute(writer, "INSERT INTO orders (status, total) VALUES ('new', 5)")
        assert refused(writer, "SELECT pgobs.emit('User', 'x')") == "InsufficientPrivilege"
    assert scalar(orders, "SELECT array_agg(event_type) FROM pgobs.events") == ["INSERT"]


def seed_dead_letter(dsn: str) -> int:
    event_id = scalar(dsn, "SELECT pgobs.emit('Order', 'paid', '1', '{\"total\": 5}')")
    dead: int = scalar(
        dsn,
        "INSERT INTO pgobs.dlq (job_id, event_id, observer, action_index, action_type, event, "
        "attempts, max_attempts, last_error, error_kind, created_at) "
        "SELECT 1, id, 'obs', 0, 'webhook', to_jsonb(e), 1, 1, 'HTTP 400', 'permanent', now() "
        "FROM pgobs.events e WHERE id = %s RETURNING id",
        (event_id,),
    )
    return dead


def test_the_operator_role_reads_and_retries_dead_letters(orders: str) -> None:
    dead = seed_dead_letter(orders)
    with login_role(orders, "pgobs_operator") as operator:
        for args in (["dlq", "list"], ["dlq", "show", str(dead)], ["dlq", "stats"]):
            result = run_pgobs(operator, *args)
            assert result.returncode == 0, result.stderr
        retried = run_pgobs(operator, "dlq", "retry", str(dead))
        assert retried.returncode == 0, retried.stderr
        assert scalar(orders, "SELECT count(*) FROM pgobs.jobs") == 1
        assert scalar(operator, "SELECT count(*) FROM pgobs.events") == 1
        purged = run_pgobs(operator, "dlq", "purge", "--older-than", "1d")
        assert purged.returncode == 0, purged.stderr
        assert_cannot_forge(operator)
        for statement in (
            "UPDATE pgobs.jobs SET attempts = 0",
            "DELETE FROM pgobs.jobs",
            # A job of its own, with a made-up event as payload, would be a forged event.
            "INSERT INTO pgobs.jobs (event_id, observer, action_index, action_type, payload) "
            """VALUES (-1, 'payments', 0, 'log', '{"entity_type": "Order"}')""",
            "DELETE FROM pgobs.events",
            "UPDATE pgobs.dlq SET last_error = ''",
            "INSERT INTO pgobs.checkpoints (listener_id) VALUES ('x')",
        ):
            assert refused(operator, statement) == "InsufficientPrivilege", statement


def test_the_worker_role_runs_the_pipeline(orders: str, receiver: Receiver, tmp_path: Path) -> None:
    """``pgobs worker`` as a role holding pgobs_worker only: fan-out, delivery, a dead letter."""
    receiver.respond("/bad", 400)
    config = tmp_path / "observers.yaml"
    config.write_text(
        f"""
observers:
  - name: obs-ok
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/ok"}}]
  - name: obs-bad
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/bad"}}]
    retry: {{max_attempts: 1}}
"""
    )
    with login_role(orders, "pgobs_worker") as worker_dsn:
        worker = Worker(
            worker_dsn,
            "--config",
            str(config),
            log_path=tmp_path / "w.log",
            env=pgobs_env(worker_dsn),
        )
        try:
            execute(orders, "INSERT INTO orders (status, total) VALUES ('paid', 10)")
            receiver.wait_for(1, "/ok")
            wait_until(lambda: scalar(orders, "SELECT count(*) FROM pgobs.dlq") == 1)
        finally:
            worker.stop()
        assert "permission denied" not in worker.output()
        assert_cannot_forge(worker_dsn)
        for statement in ("DELETE FROM pgobs.events", "UPDATE pgobs.events SET data = '{}'"):
            assert refused(worker_dsn, statement) == "InsufficientPrivilege", statement


def test_a_migrating_role_without_createrole_still_migrates(empty_dsn: str) -> None:
    """The roles are cluster-wide and exist already (the template's migration made them): a
    migrating role that may not create roles grants them their rights in its database."""
    name = f"pgobs_owner_{uuid.uuid4().hex[:10]}"
    execute(empty_dsn, f"CREATE ROLE {name} LOGIN")
    try:
        database = scalar(empty_dsn, "SELECT current_database()")
        execute(empty_dsn, f'GRANT CREATE ON DATABASE "{database}" TO {name}')
        owner = psycopg.conninfo.make_conninfo(empty_dsn, user=name)
        result = run_pgobs(owner, "migrate")
        assert result.returncode == 0, result.stderr
        assert scalar(
            empty_dsn,
            "SELECT has_function_privilege('pgobs_app', 'pgobs.emit(text,text,text,jsonb)', "
            "'EXECUTE') AND NOT has_function_privilege('pgobs_app', 'pgobs.track(regclass,text,"
            "text,text[])', 'EXECUTE')",
        )
    finally:
        execute(empty_dsn, f"DROP OWNED BY {name}")
        execute(empty_dsn, f"DROP ROLE {name}")


def test_create_roles_grants_what_every_migration_added(dsn: str) -> None:
    """Roles created after the migrations (create_roles() run later, as the README says) get
    the rights of 0007-0014 too: settings, the trail and where it ships, the emit overload,
    maintenance."""
    grants = [
        ("pgobs_operator", "SELECT", "pgobs.settings"),
        ("pgobs_operator", "UPDATE", "pgobs.settings"),
        ("pgobs_operator", "SELECT", "pgobs.trail"),
        ("pgobs_operator", "SELECT", "pgobs.job_counts"),
        ("pgobs_operator", "SELECT", "pgobs.trail_records"),
        ("pgobs_operator", "SELECT", "pgobs.trail_shipping"),
        ("pgobs_worker", "INSERT", "pgobs.trail"),
        ("pgobs_worker", "SELECT", "pgobs.settings"),
    ]
    functions = [
        ("pgobs_app", "pgobs.emit(text,text,text,jsonb,text)"),
        ("pgobs_worker", "pgobs.record_trail(text,bigint[],text[],text[],text[],text[])"),
        ("pgobs_worker", "pgobs.run_maintenance(boolean,integer)"),
        ("pgobs_operator", "pgobs.run_maintenance(boolean,integer)"),
        (
            "pgobs_operator",
            "pgobs.trail_terms(text,text,text,text,text,text,text,text,text,text,"
            "bigint,bigint,integer,integer)",
        ),
    ]
    # As if the roles had not existed when the migrations ran.
    for role, privilege, table in grants:
        execute(dsn, f"REVOKE {privilege} ON {table} FROM {role}")
    for role, function in functions:
        execute(dsn, f"REVOKE EXECUTE ON FUNCTION {function} FROM {role}")
    execute(dsn, "SELECT pgobs.create_roles()")
    for role, privilege, table in grants:
        assert scalar(dsn, "SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)), (
            role,
            privilege,
            table,
        )
    for role, function in functions:
        assert scalar(dsn, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, function))
    # and nothing more than before: the worker still cannot change settings or forge events.
    assert not scalar(dsn, "SELECT has_table_privilege('pgobs_worker', 'pgobs.settings', 'UPDATE')")
    assert not scalar(dsn, "SELECT has_table_privilege('pgobs_worker', 'pgobs.events', 'INSERT')")


def tracked_tree(dsn: str, owner: str) -> None:
    """``owner``'s partitioned table m with a partition m_eu, tracked (by the superuser) as M."""
    execute(owner, "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) "
            "PARTITION BY LIST (region)")  # fmt: skip
    execute(owner, "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
    execute(dsn, "SELECT pgobs.track('m', 'M')")


def test_the_owner_of_a_tracked_partitioned_table_adds_partitions_and_cannot_forge(
    dsn: str,
) -> None:
    """Issue 8: once a partitioned table was tracked, its owner (not a superuser) could no longer
    create or attach a partition: Postgres copies the capture trigger as that role, which had no
    right to the function. track() grants it; a guard refuses every trigger calling pgobs'
    functions that track() did not create, so the owner still cannot mint events, nor plant a
    trigger that would make the partition sync refuse everyone's DDL."""
    with login_role(dsn) as owner:
        tracked_tree(dsn, owner)
        execute(owner, "CREATE TABLE b (id int PRIMARY KEY, region text)")
        execute(owner, "CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us')")
        execute(owner, "CREATE TABLE m_ap (id int NOT NULL, region text NOT NULL)")
        execute(owner, "ALTER TABLE m ATTACH PARTITION m_ap FOR VALUES IN ('ap')")
        execute(owner, "INSERT INTO m VALUES (1, 'us'), (2, 'ap'), (3, 'eu')")
        execute(owner, "UPDATE m SET region = 'us' WHERE id = 3")  # moves across partitions
        execute(owner, "TRUNCATE m_ap")
        events = fetch(dsn, "SELECT entity_type, entity_id, event_type FROM pgobs.events "
                       "ORDER BY id")  # fmt: skip
        assert events == [
            ("M", "1,us", "INSERT"),
            ("M", "2,ap", "INSERT"),
            ("M", "3,eu", "INSERT"),
            ("M", "3,us", "UPDATE"),
            ("M", None, "TRUNCATE"),
        ]
        # With the schema usable, the owner can name the function: the guard refuses the trigger.
        execute(dsn, f"GRANT USAGE ON SCHEMA pgobs TO {scalar(owner, 'SELECT current_user')}")
        forgeries = [
            "CREATE TRIGGER forged AFTER INSERT ON b FOR EACH ROW "
            "EXECUTE FUNCTION pgobs.capture_partitioned('Payment', '0', 'INSERT', 'id')",
            "CREATE TRIGGER forged BEFORE INSERT ON m_eu FOR EACH ROW "
            "EXECUTE FUNCTION pgobs.capture_partitioned('M', '0', 'INSERT', 'id')",
            # named like tracking's own: the sync would take m_eu for a table tracked alone
            "CREATE TRIGGER pgobs_capture_truncate BEFORE TRUNCATE ON m_eu FOR EACH STATEMENT "
            "EXECUTE FUNCTION pgobs.capture_partitioned('M', '0')",
        ]
        for statement in forgeries:
            assert refused(owner, statement) == "InsufficientPrivilege", statement
        execute(owner, "CREATE TABLE logs (id int, d date) PARTITION BY RANGE (d)")
        execute(owner, "INSERT INTO b VALUES (9, 'eu')")
        assert scalar(dsn, "SELECT count(*) FROM pgobs.events") == len(events)


def test_the_owner_of_a_tracked_partitioned_table_cannot_plant_capture_inside_create_schema(
    dsn: str,
) -> None:
    """The guard fires on the CREATE TRIGGER tag only: a trigger given as an element of CREATE
    SCHEMA runs as a subcommand of that command, and no CREATE TRIGGER event fires. An owner
    granted capture_partitioned (for its partitions) with CREATE on the database (any database
    owner has it) attached capture to a table of its own and minted events of any entity type."""
    with login_role(dsn) as owner:
        role = scalar(owner, "SELECT current_user")
        execute(owner, "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) "
                "PARTITION BY LIST (region)")  # fmt: skip
        execute(dsn, "SELECT pgobs.track('m', 'M')")
        execute(dsn, f"GRANT USAGE ON SCHEMA pgobs TO {role}")
        database = scalar(dsn, "SELECT current_database()")
        execute(dsn, f'GRANT CREATE ON DATABASE "{database}" TO {role}')
        try:
            execute(
                owner,
                "CREATE SCHEMA forged CREATE TABLE pay (id int) "
                "CREATE TRIGGER forged AFTER INSERT ON pay FOR EACH ROW "
                "EXECUTE FUNCTION pgobs.capture_partitioned('Payment', '0', 'INSERT', 'id')",
            )
            execute(owner, "INSERT INTO forged.pay VALUES (1000000)")
        except psycopg.errors.InsufficientPrivilege:
            pass
        assert fetch(dsn, "SELECT entity_type, entity_id FROM pgobs.events") == []


def test_renaming_the_syncs_trigger_on_a_partition_does_not_stop_everyones_partition_ddl(
    dsn: str,
) -> None:
    """The owner of a tracked partition may rename the statement trigger the partition sync
    gave it: named pgobs_capture_*, it made the partition look tracked on its own, and every
    later CREATE TABLE or ALTER TABLE of a partitioned table or partition in the database,
    a superuser's included, failed in the sync. No pgobs right or CREATE TRIGGER is needed."""
    with login_role(dsn) as owner:
        tracked_tree(dsn, owner)
        with suppress(psycopg.Error):
            execute(owner, "ALTER TRIGGER pgobs_tree_truncate ON m_eu RENAME TO pgobs_capture_x")
        execute(dsn, "CREATE TABLE others_logs (d date) PARTITION BY RANGE (d)")


def test_a_partition_detached_from_a_tracked_tree_keeps_no_capture_trigger(dsn: str) -> None:
    """The sync drops the statement triggers it gave a partition by name (pgobs_tree_*) when the
    partition leaves the tree; the partition's owner renamed one first, so the detached table
    (or any tree it is attached to next) kept capture_truncate and minted TRUNCATE events of the
    tracked entity type for a table pgobs no longer tracks."""
    with login_role(dsn) as owner:
        tracked_tree(dsn, owner)
        with suppress(psycopg.Error):
            execute(owner, "ALTER TRIGGER pgobs_tree_truncate ON m_eu RENAME TO keep")
        execute(owner, "ALTER TABLE m DETACH PARTITION m_eu")
        execute(owner, "TRUNCATE m_eu")
        assert fetch(dsn, "SELECT entity_type, event_type FROM pgobs.events") == []


def test_a_new_owner_of_a_tracked_partitioned_table_adds_partitions(dsn: str) -> None:
    """The right track() gave the owner follows ALTER TABLE ... OWNER TO."""
    with login_role(dsn) as first, login_role(dsn) as second:
        execute(first, "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) "
                "PARTITION BY LIST (region)")  # fmt: skip
        execute(dsn, "SELECT pgobs.track('m', 'M')")
        execute(dsn, f"ALTER TABLE m OWNER TO {scalar(second, 'SELECT current_user')}")
        execute(second, "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
        execute(second, "INSERT INTO m VALUES (1, 'eu')")
    assert fetch(dsn, "SELECT entity_type, entity_id FROM pgobs.events") == [("M", "1,eu")]
