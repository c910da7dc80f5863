"""Ships the trail to Elasticsearch: one shipper per fleet, durable, exactly-once in effect.

Every worker started with ``--elasticsearch-url`` runs a candidate; the one that holds the
shipping lock (on its own session) ships, the others stand by. A batch is read after the cursor
kept in ``pgobs.trail_shipping``, indexed with the bulk helper under deterministic ids, then the
cursor moves past it: a crash between the two ships the batch again, which overwrites the same
documents. Elasticsearch down or refusing: the worker stays healthy, the backlog waits in
Postgres (observer_search_sink_backlog and _age_seconds) and drains when it is back. A document
Elasticsearch rejects (a mapping conflict) is recorded in ``pgobs.trail_rejects`` and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import psycopg
from elastic_transport import TransportError
from elasticsearch import ApiError
from elasticsearch.helpers import async_bulk
from psycopg.rows import dict_row

from pgobs.db.connect import Connection, connect
from pgobs.db.sqlfiles import query
from pgobs.observability import metrics
from pgobs.trail.elastic import (
    INDEX_PATTERN,
    INDEX_TEMPLATE,
    NEW_FIELDS,
    POLICY_NAME,
    TEMPLATE_NAME,
    client,
    document,
    policy,
)

log = logging.getLogger("pgobs.trail")

SINK = "elasticsearch"
_PERMANENT = frozenset({400, 403, 404, 409, 413})  # a document, not the server: skip it


class ServerFailed(Exception):
    """Elasticsearch failed a document for a reason of its own (overloaded, unavailable)."""


@dataclass(frozen=True, slots=True)
class ShipperSettings:
    url: str
    batch_size: int = 2000
    idle_s: float = 1.0  # nothing to ship: look again this often
    standby_s: float = 5.0  # another process ships: try for the lock this often
    retry_max_s: float = 30.0  # Elasticsearch down: back off up to this
    retention_days: int = 90


@dataclass(frozen=True, slots=True)
class Bulk:
    """A batch as the bulk helper takes it, and where the cursor goes after it."""

    actions: list[dict[str, Any]]
    records: dict[str, tuple[int, int, datetime]]  # document id -> (id, seq, at), for rejects
    txid: str
    last_id: int
    last_seq: int


def prepare(rows: list[dict[str, Any]]) -> Bulk:
    """Bulk actions for rows of trail_ship_batch (no I/O: what bench_search measures)."""
    actions = [document(row) for row in rows]
    last = rows[-1]
    return Bulk(
        actions,
        {
            a["_id"]: (row["id"], row["seq"], row["at"])
            for a, row in zip(actions, rows, strict=True)
        },
        last["txid"],
        last["id"],
        last["seq"],
    )


class Shipper:
    def __init__(self, dsn: str, settings: ShipperSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.shipping = False
        self._es = client(settings.url)
        self._installed = False
        self._down_since: float | None = None

    async def run(self) -> None:
        """Stand by or ship, until cancelled; a lost database session starts over."""
        try:
            while True:
                try:
                    await self._candidate()
                except psycopg.OperationalError as exc:
                    log.warning("trail shipper: database connection lost (%s); retrying", exc)
                    self.shipping = False
                    await anyio.sleep(self.settings.standby_s)
        finally:
            with anyio.CancelScope(shield=True):
                await self._es.close()

    async def _candidate(self) -> None:
        conn = await connect(self.dsn, autocommit=True)
        try:
            while True:
                cur = await conn.execute(query("trail_ship_lock"))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    break
                await anyio.sleep(self.settings.standby_s)
            self.shipping = True
            log.info("trail shipper: shipping to Elasticsearch at %s", self.settings.url)
            await self._ship(conn)
        finally:
            self.shipping = False
            await conn.close()

    async def _ship(self, conn: Connection) -> None:
        backoff = 1.0
        while True:
            await self._measure(conn)
            rows = await self._batch(conn)
            if not rows:
                await anyio.sleep(self.settings.idle_s)
                continue
            bulk = prepare(rows)
            try:
                await self._install()
                rejects = await self._send(bulk)
            except (TransportError, ApiError, ServerFailed) as exc:
                # The server, not a document: wait, and send the batch again.
                self._down(exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_s)
                continue
            backoff = 1.0
            self._up()
            await self._advance(conn, bulk, rejects)

    async def _batch(self, conn: Connection) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                query("trail_ship_batch"), {"sink": SINK, "limit": self.settings.batch_size}
            )
            return await cur.fetchall()

    async def _measure(self, conn: Connection) -> None:
        cur = await conn.execute(query("trail_ship_backlog"), {"sink": SINK})
        row = await cur.fetchone()
        if row is not None:
            metrics.search_sink_backlog.set(row[0])
            metrics.search_sink_backlog_age_seconds.set(row[1])

    async def _install(self) -> None:
        """The ILM policy and index template, once per process (both puts are idempotent)."""
        if self._installed:
            return
        await self._es.ilm.put_lifecycle(
            name=POLICY_NAME, policy=policy(self.settings.retention_days)
        )
        await self._es.indices.put_index_template(name=TEMPLATE_NAME, **INDEX_TEMPLATE)
        # Indices made by an older template (before seq, 0014) take the new field too.
        await self._es.indices.put_mapping(
            index=INDEX_PATTERN, properties=NEW_FIELDS, allow_no_indices=True
        )
        self._installed = True

    async def _send(self, bulk: Bulk) -> dict[str, str]:
        """Index the batch; returns the rejected documents' errors by id. Raises when the
        server (not a document) failed, so the whole batch is sent again."""
        _, errors = await async_bulk(
            self._es, bulk.actions, raise_on_error=False, stats_only=False, max_retries=2
        )
        rejects: dict[str, str] = {}
        assert isinstance(errors, list)
        for item in errors:
            result = next(iter(item.values()))
            status = int(result.get("status", 0))
            if status not in _PERMANENT:
                raise ServerFailed(f"Elasticsearch answered {status} for a document")
            rejects[str(result.get("_id"))] = str(result.get("error"))[:2000]
        shipped = len(bulk.actions) - len(rejects)
        metrics.search_sink_shipped.inc(shipped)
        if rejects:
            metrics.search_sink_rejected.inc(len(rejects))
            log.warning(
                "trail shipper: Elasticsearch rejected %d record(s) (see pgobs.trail_rejects)",
                len(rejects),
            )
        return rejects

    async def _advance(self, conn: Connection, bulk: Bulk, rejects: dict[str, str]) -> None:
        await conn.execute(
            query("trail_ship_advance"),
            {
                "sink": SINK,
                "txid": bulk.txid,
                "id": bulk.last_id,
                "seq": bulk.last_seq,
                "shipped": len(bulk.actions) - len(rejects),
                "rejected": len(rejects),
                "reject_ids": [bulk.records[i][0] for i in rejects],
                "reject_seqs": [bulk.records[i][1] for i in rejects],
                "reject_ats": [bulk.records[i][2] for i in rejects],
                "reject_errors": list(rejects.values()),
            },
        )

    def _down(self, exc: Exception) -> None:
        metrics.search_sink_up.set(0)
        if self._down_since is None:
            self._down_since = anyio.current_time()
            log.warning(
                "trail shipper: Elasticsearch at %s is unavailable (%s); the trail waits in "
                "Postgres and ships when it is back",
                self.settings.url,
                type(exc).__name__,
            )

    def _up(self) -> None:
        metrics.search_sink_up.set(1)
        if self._down_since is not None:
            log.info(
                "trail shipper: Elasticsearch is back after %.0fs",
                anyio.current_time() - self._down_since,
            )
            self._down_since = None
