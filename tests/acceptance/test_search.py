"""pgobs search on the real trail: a run with deliveries, retries, a dead letter, a drop and an
operator's retry from the DLQ, then the questions an operator asks of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pgobs import jsoncodec
from pgobs.cli.session import with_connection
from pgobs.search import parse
from pgobs.trail.postgres import search_postgres
from tests.support import Receiver, Worker, execute, fetch, run_pgobs, scalar, wait_until


def search(dsn: str, *args: str) -> list[dict[str, Any]]:
    """``pgobs search ... --json`` as a process."""
    done = run_pgobs(dsn, "search", *args, "--json", "--since", "1h")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def found(dsn: str, query: str) -> list[dict[str, Any]]:
    """The same search in this process (a process per query is slow on a loaded machine)."""
    node = parse(query)
    records = with_connection(dsn, lambda c: search_postgres(c, node, timedelta(hours=1), 100))
    return [json.loads(jsoncodec.encode(r.as_json())) for r in records]


@pytest.fixture(scope="module")
def story(
    admin_dsn: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One run for every question of this module: order 42 is paid (its payment hook fails
    twice and is dead-lettered, its audit hook is delivered, a drop hook fails for good and is
    dropped), then an operator retries the dead letter and it is delivered; order 7 is paid
    and delivered."""
    from tests.conftest import _fresh_db
    from tests.support import start_receiver

    receiver: Receiver
    receiver, stop_receiver = start_receiver()
    receiver.respond("/pay", 500, 500)
    receiver.respond("/gone", 404)
    tmp = tmp_path_factory.mktemp("story")
    databases = _fresh_db(admin_dsn, template_db)
    dsn = next(databases)
    execute(dsn, "CREATE TABLE orders (id bigint PRIMARY KEY, status text, total numeric)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp / "observers.yaml"
    config.write_text(
        f"""
observers:
  - name: obs-pay
    entity: Order
    condition: "id == 42"
    actions: [{{type: webhook, url: "{receiver.url}/pay"}}]
    retry: {{max_attempts: 2, initial_delay_ms: 100, jitter: false}}
  - name: obs-audit
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/ok"}}]
  - name: obs-drop
    entity: Order
    condition: "id == 42"
    on_failure: log
    actions: [{{type: webhook, url: "{receiver.url}/gone"}}]
"""
    )
    worker = Worker(dsn, "--config", str(config), log_path=tmp / "worker.log")
    try:
        execute(dsn, "INSERT INTO orders VALUES (42, 'paid', 120.50), (7, 'paid', 3)")
        wait_until(
            lambda: (
                scalar(dsn, "SELECT count(*) FROM pgobs.dlq") == 1
                and scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0
            ),
            timeout=40,
        )
        dead = scalar(dsn, "SELECT id FROM pgobs.dlq")
        retried = run_pgobs(dsn, "dlq", "retry", str(dead))
        assert retried.returncode == 0, retried.stderr
        receiver.wait_for(3, "/pay")
        wait_until(
            lambda: (
                scalar(dsn, "SELECT count(*) FROM pgobs.trail_records WHERE status = 'delivered'")
                == 3
            ),
            timeout=40,
        )
    finally:
        worker.stop()
        stop_receiver()
    yield dsn
    next(databases, None)


def test_the_whole_story_of_order_42_in_order(story: str) -> None:
    records = search(story, "entity_id:42")
    assert {r["entity_id"] for r in records} == {"42"}
    told = list(reversed(records))  # newest first: reversed, the story as it happened
    first = told[0]
    assert (first["kind"], first["status"], first["event_type"]) == ("event", "matched", "INSERT")
    assert sorted(first["observer"]) == ["obs-audit", "obs-drop", "obs-pay"]
    pay = [
        (r["status"], r["attempt"], r["status_code"]) for r in told if r["observer"] == ["obs-pay"]
    ]
    assert pay == [
        ("retried", 1, 500),
        ("failed", 2, 500),
        ("retried_from_dlq", 2, None),
        ("delivered", 1, 200),
    ]
    assert [r["status"] for r in told if r["observer"] == ["obs-drop"]] == ["dropped"]
    assert [r["status"] for r in told if r["observer"] == ["obs-audit"]] == ["delivered"]
    delivered = next(r for r in told if r["status"] == "delivered")
    assert delivered["duration_ms"] is not None and delivered["duration_ms"] >= 0
    retry = next(r for r in told if r["status"] == "retried")
    assert retry["next_run_at"] is not None and "answered 500" in retry["message"]
    assert len(told) == 7


def test_status_failed_finds_exactly_the_failures(story: str) -> None:
    failures = search(story, "status:failed AND action_type:webhook")
    assert sorted((r["observer"][0], r["status"]) for r in failures) == [
        ("obs-drop", "dropped"),
        ("obs-pay", "failed"),
        ("obs-pay", "retried"),
    ]
    assert [r["status"] for r in found(story, "status:dead_lettered")] == ["failed"]


def test_the_table_and_the_empty_answer(story: str) -> None:
    table = run_pgobs(story, "search", "entity_id:42 AND observer:obs-pay", "--since", "1h")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["TIME", "ENTITY", "EVENT"]
    assert len(lines) == 1 + 5  # the event (it matched obs-pay) and four outcomes
    assert "Order 42" in lines[1] and "HTTP 200" in lines[1]
    none = run_pgobs(story, "search", "entity_id:43")
    assert none.returncode == 0
    assert none.stdout.strip() == (
        "no record matches in the last 24h (widen it with --since, e.g. --since 7d or all)"
    )


def test_ranges_relative_times_data_and_full_text(story: str) -> None:
    assert len(found(story, "entity_id:42 AND timestamp:[now-1h TO now]")) == 7
    assert found(story, "timestamp:{now TO *]") == []
    created = found(story, "entity_type:Order AND event_kind:created AND timestamp:[now-1d TO now]")
    assert len(created) == 9  # two events and their outcomes: 7 for order 42, 1 for order 7
    events = [r["entity_id"] for r in created if r["kind"] == "event"]
    assert sorted(events) == ["42", "7"]
    big = found(story, "kind:event AND data.total:>100")
    assert [r["entity_id"] for r in big] == ["42"]
    assert [r["entity_id"] for r in found(story, "kind:event AND data.total:[1 TO 10]")] == ["7"]
    codes = found(story, "status_code:[500 TO 599]")
    assert sorted(r["status"] for r in codes) == ["failed", "retried"]
    assert len(found(story, "status_code:>=400 AND NOT observer:obs-pay")) == 1
    phrase = found(story, '"answered 500"')
    assert sorted(r["status"] for r in phrase) == ["failed", "retried"]
    assert {r["entity_id"] for r in found(story, "paid AND kind:event")} == {"42", "7"}
    assert {r["observer"][0] for r in found(story, "observer:obs-d* AND kind:action")} == {
        "obs-drop"
    }


def test_bad_queries_are_one_line_errors(story: str) -> None:
    for query, expected in [
        ("status:[a TO", "cannot read the query at column 13: expected a bound"),
        ("customer_org:acme", "unknown field 'customer_org'"),
        ("status:exploded", "unknown status 'exploded'"),
        ("(entity_id:42", "expected ')' to close the '(' at column 1"),
    ]:
        done = run_pgobs(story, "search", query)
        assert done.returncode == 2, (query, done.stdout)
        assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    since = run_pgobs(story, "search", "entity_id:42", "--since", "soon")
    assert since.returncode == 2 and "cannot read --since 'soon'" in since.stderr


def test_unreachable_elasticsearch_is_one_line(story: str) -> None:
    done = run_pgobs(
        story,
        "search",
        "entity_id:42",
        "--backend",
        "elasticsearch",
        "--elasticsearch-url",
        "http://127.0.0.1:9",
        timeout=60,
    )
    assert done.returncode == 3  # a connection error
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Elasticsearch at http://127.0.0.1:9 is unreachable" in done.stderr


def test_the_trail_can_be_switched_off(dsn: str, receiver: Receiver, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE orders (id bigint PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text(
        f"""
observers:
  - name: obs-hook
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/ok"}}]
"""
    )
    worker = Worker(dsn, "--config", str(config), "--no-trail", log_path=tmp_path / "w.log")
    try:
        execute(dsn, "INSERT INTO orders VALUES (1, 'paid')")
        receiver.wait_for(1, "/ok")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0)
    finally:
        worker.stop()
    assert fetch(dsn, "SELECT kind, status FROM pgobs.trail") == []
