"""The trail shipper against an Elasticsearch stand-in on loopback (a real HTTP server that
answers the bulk, ILM and template APIs as Elasticsearch does): the backlog waits while it is
down, drains when it is back, a rejected document is recorded and skipped, one shipper ships,
and shipping again overwrites instead of duplicating."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import REGISTRY

from pgobs.db.sqlfiles import query
from pgobs.trail.elastic import index_for
from pgobs.trail.shipper import Shipper, ShipperSettings
from tests.support import execute, fetch, scalar


@dataclass
class FakeElasticsearch:
    url: str = ""
    up: bool = False
    reject: set[str] = field(default_factory=set)  # document ids answered with a 400
    docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bulks: int = 0
    refused: int = 0  # requests answered 503 while down
    puts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if not self.up:
            with self.lock:
                self.refused += 1
            return 503, {"error": "unavailable", "status": 503}
        if method == "PUT" and path.split("?")[0] in (
            "/_ilm/policy/pgobs-trail",
            "/_index_template/pgobs-trail",
        ):
            with self.lock:
                self.puts.append(path.split("?")[0])
            return 200, {"acknowledged": True}
        if method == "PUT" and path.split("?")[0].endswith("/_mapping"):
            with self.lock:
                self.puts.append("mapping")
            return 200, {"acknowledged": True}
        if method in ("POST", "PUT") and path.split("?")[0] == "/_bulk":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            items = []
            with self.lock:
                self.bulks += 1
                for action, source in zip(lines[::2], lines[1::2], strict=True):
                    meta = action["index"]
                    if meta["_id"] in self.reject:
                        items.append(
                            {
                                "index": {
                                    "_index": meta["_index"],
                                    "_id": meta["_id"],
                                    "status": 400,
                                    "error": {"type": "document_parsing_exception"},
                                }
                            }
                        )
                        continue
                    self.docs[(meta["_index"], meta["_id"])] = source
                    items.append(
                        {"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201}}
                    )
            errors = any(i["index"]["status"] >= 300 for i in items)
            return 200, {"took": 1, "errors": errors, "items": items}
        return 404, {"error": f"no route {method} {path}", "status": 404}


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    fake = FakeElasticsearch()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = fake.answer(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("x-elastic-product", "Elasticsearch")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def add_records(dsn: str, count: int) -> list[int]:
    rows = fetch(
        dsn,
        "INSERT INTO pgobs.trail (kind, status, entity_type, entity_id, event_type, observers, "
        "data) SELECT 'event', 'matched', 'Order', g::text, 'INSERT', ARRAY['obs-a'], "
        "jsonb_build_object('total', g, 'tags', jsonb_build_array('a', jsonb_build_object('x', 1)))"
        " FROM generate_series(1, %s) AS g RETURNING id",
        (count,),
    )
    return [r[0] for r in rows]


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def shipped(dsn: str) -> tuple[int, int] | None:
    rows = fetch(dsn, "SELECT shipped, rejected FROM pgobs.trail_shipping")
    return (rows[0][0], rows[0][1]) if rows else None


FAST = {"idle_s": 0.05, "standby_s": 0.1, "retry_max_s": 0.2}


@pytest.mark.anyio
async def test_the_backlog_waits_for_elasticsearch_and_drains(
    dsn: str, fake_es: FakeElasticsearch
) -> None:
    ids = add_records(dsn, 5)
    fake_es.reject = {str(ids[2])}
    shipper = Shipper(dsn, ShipperSettings(fake_es.url, **FAST))
    async with anyio.create_task_group() as tg:
        tg.start_soon(shipper.run)
        # Down: the shipper leads, nothing moves, and the backlog shows.
        await wait_for(lambda: fake_es.refused >= 2)  # tried, and tried again
        assert shipper.shipping and gauge("observer_search_sink_up") == 0
        assert gauge("observer_search_sink_backlog") == 5
        assert (gauge("observer_search_sink_backlog_age_seconds") or 0) >= 0
        assert shipped(dsn) is None
        # Back: everything ships, the rejected document is recorded and skipped.
        fake_es.up = True
        await wait_for(lambda: shipped(dsn) == (4, 1))
        assert {key[1] for key in fake_es.docs} == {str(i) for i in ids} - {str(ids[2])}
        rejects = fetch(dsn, "SELECT trail_id, error FROM pgobs.trail_rejects")
        assert [r[0] for r in rejects] == [ids[2]] and "document_parsing_exception" in rejects[0][1]
        assert sorted(set(fake_es.puts)) == [
            "/_ilm/policy/pgobs-trail",
            "/_index_template/pgobs-trail",
            "mapping",  # indices of an older template take the fields added since
        ]
        # New records follow; the backlog empties.
        more = add_records(dsn, 2)
        await wait_for(lambda: shipped(dsn) == (6, 1))
        await wait_for(lambda: gauge("observer_search_sink_backlog") == 0)
        tg.cancel_scope.cancel()
    at = scalar(dsn, "SELECT at FROM pgobs.trail WHERE id = %s", (more[0],))
    doc = fake_es.docs[(index_for(at), str(more[0]))]
    assert doc["observer"] == ["obs-a"] and doc["entity_id"] == "1"
    assert doc["data"] == {"total": 1, "tags": ["a"]}  # objects inside arrays are left out
    assert doc["text"] == "a 1 1"  # data's values, in jsonb's order: tags, then total
    assert doc["timestamp"] == at.isoformat()


@pytest.mark.anyio
async def test_one_shipper_ships_and_shipping_again_overwrites(
    dsn: str, fake_es: FakeElasticsearch
) -> None:
    fake_es.up = True
    add_records(dsn, 10)
    first = Shipper(dsn, ShipperSettings(fake_es.url, **FAST))
    second = Shipper(dsn, ShipperSettings(fake_es.url, **FAST))
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await wait_for(lambda: first.shipping)
        tg.start_soon(second.run)
        await wait_for(lambda: shipped(dsn) == (10, 0))
        await anyio.sleep(0.3)  # the standby tried the lock a few times
        assert first.shipping and not second.shipping
        assert len(fake_es.docs) == 10
        bulks = fake_es.bulks
        # A crash after the bulk request and before the cursor moved: the batch goes again.
        execute(dsn, "UPDATE pgobs.trail_shipping SET txid = '0', id = 0")
        await wait_for(lambda: fake_es.bulks > bulks and shipped(dsn) == (20, 0))
        assert len(fake_es.docs) == 10  # the same ids: overwritten, not duplicated
        tg.cancel_scope.cancel()


def add_batch(dsn: str, jobs: int) -> int:
    """A batch record of deliveries, as write_outcomes writes it."""
    return int(
        scalar(
            dsn,
            "INSERT INTO pgobs.trail (kind, status, entity_type, event_type, observer, action, "
            "action_type, batch_event_ids, batch_job_ids, batch_entity_ids, batch_attempts, "
            "batch_status_codes, batch_durations_ms) "
            "SELECT 'action', 'delivered', 'Order', 'INSERT', 'obs-a', 'hook', 'webhook', "
            "array_agg(g), array_agg(100 + g), array_agg(g::text), array_agg(1), "
            "array_agg(200), array_agg(g * 1.5) FROM generate_series(1, %s) AS g RETURNING id",
            (jobs,),
        )
    )


@pytest.mark.anyio
async def test_a_batch_record_ships_a_document_per_job(
    dsn: str, fake_es: FakeElasticsearch
) -> None:
    """Each job of a batch record is a document of its own (id-seq), batches of the bulk cut
    through the record, and a rejected job is recorded with its seq."""
    fake_es.up = True
    batch = add_batch(dsn, 5)
    fake_es.reject = {f"{batch}-4"}
    backlog = query("trail_ship_backlog")
    assert fetch(dsn, backlog, {"sink": "elasticsearch"})[0][0] == 5  # documents, not records
    shipper = Shipper(dsn, ShipperSettings(fake_es.url, batch_size=2, **FAST))
    async with anyio.create_task_group() as tg:
        tg.start_soon(shipper.run)
        await wait_for(lambda: shipped(dsn) == (4, 1))
        tg.cancel_scope.cancel()
    assert fake_es.bulks == 3
    docs = {key[1]: doc for key, doc in fake_es.docs.items()}
    assert sorted(docs) == [f"{batch}-{seq}" for seq in (1, 2, 3, 5)]
    third = docs[f"{batch}-3"]
    assert (third["event_id"], third["job_id"], third["entity_id"]) == (3, 103, "3")
    assert (third["seq"], third["duration_ms"], third["observer"]) == (3, 4.5, ["obs-a"])
    rejects = fetch(dsn, "SELECT trail_id, seq FROM pgobs.trail_rejects")
    assert rejects == [(batch, 4)]
    assert fetch(dsn, backlog, {"sink": "elasticsearch"})[0][0] == 0
    # The cursor inside a batch record: what is left of it is the backlog.
    execute(dsn, "UPDATE pgobs.trail_shipping SET seq = 2")
    assert fetch(dsn, backlog, {"sink": "elasticsearch"})[0][0] == 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_only_an_open_trail_writer_holds_shipping_back(dsn: str) -> None:
    """The cursor never passes a record still to commit, and a long transaction that writes no
    trail (here, or in another database) does not stall shipping."""

    def shippable() -> int:
        return len(fetch(dsn, query("trail_ship_batch"), {"sink": "elasticsearch", "limit": 100}))

    add_records(dsn, 1)
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn) as other:
        other.execute("CREATE TEMP TABLE busy (a int)")
        other.execute("INSERT INTO busy VALUES (1)")  # open, with an xid, writing no trail
        add_records(dsn, 1)
        assert shippable() == 2
        writer.execute(
            "INSERT INTO pgobs.trail (kind, status) VALUES ('action', 'delivered')"
        )  # open
        add_records(dsn, 1)  # committed, after the open writer's xid
        assert shippable() == 2
        writer.commit()
        assert shippable() == 4
