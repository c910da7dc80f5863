"""Postgres and Elasticsearch give the same answers: records shipped by the real shipper to the
server at PGOBS_TEST_ELASTICSEARCH_URL, then a corpus of queries run on both backends. Without
that server this test cannot run (the translation is tested by its output in
tests/unit/test_search_language.py)."""

from __future__ import annotations

import os
from datetime import timedelta

import anyio
import pytest

from pgobs.cli.session import with_connection
from pgobs.search import parse
from pgobs.trail.elastic import INDEX_PATTERN, client, search_elasticsearch
from pgobs.trail.postgres import search_postgres
from pgobs.trail.shipper import Shipper, ShipperSettings
from tests.integration.test_trail import insert, random_records
from tests.support import scalar

URL = os.environ.get("PGOBS_TEST_ELASTICSEARCH_URL")

CORPUS = [
    "*",
    "entity_id:42",
    "status:failed AND action_type:webhook",
    "entity_type:Order AND event_kind:created AND timestamp:[now-1d TO now]",
    "observer:obs-a OR observer:pay",
    "observer:obs-* AND NOT kind:event",
    "attempt:[2 TO 4} AND status_code:>=400",
    "entity_id:[4 TO 7]",
    "tenant:* AND -actor:*",
    "data.status:paid OR data.total:>100",
    "data.tag:order AND data.n:[0 TO 50]",
    "data.status:o* OR data.tag.id:7",
    "order",
    '"order paid"',
    "pa*",
    "timestamp:[now-2d TO now-1d}",
]


@pytest.mark.skipif(URL is None, reason="needs PGOBS_TEST_ELASTICSEARCH_URL")
def test_postgres_and_elasticsearch_give_the_same_answers(dsn: str) -> None:
    assert URL is not None
    now = scalar(dsn, "SELECT now()")
    insert(dsn, random_records(now, 300, seed=11))

    async def ship() -> None:
        shipper = Shipper(dsn, ShipperSettings(URL, idle_s=0.1))
        es = client(URL)
        try:
            await es.options(ignore_status=404).indices.delete(index=INDEX_PATTERN)
            async with anyio.create_task_group() as tg:
                tg.start_soon(shipper.run)
                with anyio.fail_after(60):
                    while (
                        scalar(dsn, "SELECT coalesce(sum(shipped), 0) FROM pgobs.trail_shipping")
                        < 300
                    ):
                        await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
            await es.indices.refresh(index=INDEX_PATTERN)
        finally:
            await es.close()

    anyio.run(ship)
    window = timedelta(days=30)
    for query in CORPUS:
        node = parse(query)
        in_pg = with_connection(dsn, lambda c, n=node: search_postgres(c, n, window, 10_000))
        in_es = search_elasticsearch(URL, node, window, 10_000)
        assert [r.id for r in in_es] == [r.id for r in in_pg], query
