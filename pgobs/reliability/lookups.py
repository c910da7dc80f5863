"""Enrichment: an observer's named lookups (HTTP or SQL), run before its actions, concurrently,
through the cache. Their results are ``enrich.<name>`` to templates and ``event.enrich[name]`` to
handlers. A lookup that fails fails the job, transiently: it is retried, never run with a
missing value; one whose target the egress policy refuses fails for good.

HTTP lookups go where webhooks may go: the file's egress policy is checked on the URL and on the
address connected to, as for deliveries (``pgobs.reliability.egress``), and an answer is read up
to ``MAX_ANSWER_BYTES``, never held whole past it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pgobs import jsoncodec
from pgobs.db.connect import Connection
from pgobs.events import Event
from pgobs.observability import metrics
from pgobs.reliability.cache import Cache
from pgobs.reliability.egress import EgressDenied, check_url, peer_check
from pgobs.reliability.specs import HttpLookup, Lookup, SqlLookup

MAX_ANSWER_BYTES = 1024 * 1024  # an HTTP lookup's answer past this fails the lookup


class LookupFailed(Exception):
    """A lookup did not answer; the job fails with this message, transiently unless retrying
    cannot help (``permanent``: the egress policy refuses the target)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Enricher:
    def __init__(
        self, cache: Cache, http: httpx.AsyncClient, pool: AsyncConnectionPool[Connection]
    ) -> None:
        self.cache = cache
        self.http = http
        self.pool = pool
        self._children: dict[str, tuple[Any, Any, Any]] = {}

    async def enrich(self, lookups: tuple[Lookup, ...], event: Event, observer: str) -> Event:
        """``event`` with ``enrich`` filled in, every lookup run at once."""
        envelope = event.envelope()
        envelope["observer"] = observer
        context = {**envelope, "event": envelope}
        results: dict[str, Any] = {}
        if len(lookups) == 1:
            results[lookups[0].name] = await self._one(lookups[0], event, context)
        else:

            async def run(lookup: Lookup) -> None:
                results[lookup.name] = await self._one(lookup, event, context)

            try:
                async with anyio.create_task_group() as tg:
                    for lookup in lookups:
                        tg.start_soon(run, lookup)
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None
        return Event(
            id=event.id,
            entity_type=event.entity_type,
            event_type=event.event_type,
            data=event.data,
            entity_id=event.entity_id,
            old_data=event.old_data,
            changed_fields=event.changed_fields,
            tenant=event.tenant,
            actor=event.actor,
            created_at=event.created_at,
            txid=event.txid,
            idempotency_key=event.idempotency_key,
            enrich=results,
        )

    async def _one(self, lookup: Lookup, event: Event, context: dict[str, Any]) -> Any:
        hits, misses, duration = self._metrics(lookup.name)
        started = time.perf_counter()

        async def fetch() -> Any:
            with anyio.fail_after(lookup.timeout_s):
                return await self._fetch(lookup, event, context)

        try:
            if lookup.cache is None:
                misses.inc()
                return await fetch()
            key = lookup.cache.key.render(context)
            rule = lookup.cache
            value, hit = await self.cache.get_or_set(key, rule.ttl_s, fetch, rule.local_ttl_s)
            (hits if hit else misses).inc()
            return value
        except TimeoutError as exc:
            raise LookupFailed(
                f"lookup {lookup.name} took longer than {lookup.timeout_s:g}s"
            ) from exc
        finally:
            duration.observe(time.perf_counter() - started)

    async def _fetch(self, lookup: Lookup, event: Event, context: dict[str, Any]) -> Any:
        source = lookup.source
        if isinstance(source, HttpLookup):
            return await self._get(lookup.name, source, context)
        return await self._query(lookup.name, source, event)

    async def _get(self, name: str, source: HttpLookup, context: dict[str, Any]) -> Any:
        url = source.url.render(context)
        headers = {key: value.render(context) for key, value in source.headers}
        try:
            check_url(url, source.egress)
            async with self.http.stream(
                "GET", url, headers=headers, extensions={"trace": peer_check(source.egress)}
            ) as response:
                if response.status_code // 100 != 2:
                    raise LookupFailed(f"lookup {name}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise LookupFailed(
                            f"lookup {name}: the answer is larger than "
                            f"{MAX_ANSWER_BYTES // 1024 // 1024} MiB"
                        )
        except EgressDenied as exc:
            raise LookupFailed(
                f"lookup {name}: refused by the egress policy: {exc}", permanent=True
            ) from None
        except httpx.HTTPError as exc:
            raise LookupFailed(f"lookup {name}: {type(exc).__name__} calling it") from None
        try:
            return jsoncodec.decode(bytes(body))
        except ValueError as exc:
            raise LookupFailed(f"lookup {name}: the answer is not JSON") from exc

    async def _query(self, name: str, source: SqlLookup, event: Event) -> Any:
        """The first row as an object (null when there is none)."""
        envelope = event.envelope()
        data = event.data if isinstance(event.data, dict) else {}
        params = {p: data[p] if p in data else envelope.get(p) for p in source.parameters}
        try:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                # The SQL is the operator's, from the config file; values travel as parameters.
                await cur.execute(source.sql, params)
                row = await cur.fetchone()
        except Exception as exc:
            raise LookupFailed(f"lookup {name}: the query failed: {exc}") from exc
        return None if row is None else jsoncodec.decode(jsoncodec.encode(row))

    def _metrics(self, name: str) -> tuple[Any, Any, Any]:
        found = self._children.get(name)
        if found is None:
            found = self._children[name] = (
                metrics.cache_hits.labels(name),
                metrics.cache_misses.labels(name),
                metrics.lookup_duration.labels(name),
            )
        return found
