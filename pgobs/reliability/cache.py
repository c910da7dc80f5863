"""The enrichment cache: JSON values by key with a TTL, in ``pgobs.cache`` or in Redis.

``pgobs.cache`` (UNLOGGED: a server crash empties it, which a cache may) is the default store;
with Redis configured, Redis is, and a Redis call that fails or is slow falls back to Postgres for
that call. :class:`Cache` adds single-flight per key: however many jobs of a worker want one key
at once, one reads the store and at most one computes the value; the others wait for it. It also
keeps what it read in memory for a lookup's ``local_ttl`` (1 s by default): a store round trip
costs a no-op job several times its own work. An invalidation clears this process' copy at once
and other processes' copies within their ``local_ttl``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from psycopg_pool import AsyncConnectionPool

from pgobs import jsoncodec
from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.reliability.redisconn import RedisSettings, redis_client

log = logging.getLogger("pgobs.cache")

MISSING: Any = object()  # what a store's get returns for a key it does not hold (None is a value)
REDIS_RETRY_AFTER_S = 1.0
LOCAL_ENTRIES = 10_000  # values kept in memory at most (the oldest go first)


class CacheStore(Protocol):
    async def get(self, key: str) -> Any: ...  # the value, or MISSING
    async def set(self, key: str, value: Any, ttl_s: float) -> None: ...
    async def delete(self, keys: list[str]) -> None: ...


class PostgresCache:
    """``pgobs.cache``: an expired row is a miss; maintenance deletes expired rows."""

    def __init__(self, pool: AsyncConnectionPool[Connection]) -> None:
        self.pool = pool

    async def get(self, key: str) -> Any:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("cache_get"), {"key": key})
            row = await cur.fetchone()
        return MISSING if row is None else row[0]

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                query("cache_set"),
                {"key": key, "value": jsoncodec.encode(value).decode(), "ttl_s": ttl_s},
            )

    async def delete(self, keys: list[str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query("cache_invalidate"), {"keys": keys})


class RedisCache:
    """Redis first; while it fails, Postgres (and a failure is retried at most every second).
    A delete goes to both: a value cached in Postgres during an outage must not come back."""

    def __init__(self, settings: RedisSettings, fallback: PostgresCache) -> None:
        self.settings = settings
        self.fallback = fallback
        self._prefix = settings.prefix + "cache:"
        self._client: Any = None
        self._retry_at = 0.0
        self._down = False

    def _redis(self, *, always: bool = False) -> Any:
        if not always and time.monotonic() < self._retry_at:
            return None
        if self._client is None:
            self._client = redis_client(self.settings)
        return self._client

    def _failed(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + REDIS_RETRY_AFTER_S
        if not self._down:
            self._down = True
            log.warning(
                "cache: Redis failed (%s: %s); using pgobs.cache until it answers again",
                type(exc).__name__,
                exc,
            )

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("cache: Redis answers again")

    async def get(self, key: str) -> Any:
        client = self._redis()
        if client is not None:
            try:
                raw = await client.get(self._prefix + key)
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return MISSING if raw is None else jsoncodec.decode(raw)
        return await self.fallback.get(key)

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        client = self._redis()
        if client is not None:
            try:
                await client.set(
                    self._prefix + key, jsoncodec.encode(value), px=max(1, int(ttl_s * 1000))
                )
            except Exception as exc:
                self._failed(exc)
            else:
                self._answered()
                return
        await self.fallback.set(key, value, ttl_s)

    async def delete(self, keys: list[str]) -> None:
        client = self._redis(always=True)  # a stale value must never outlive its invalidation
        if keys:
            try:
                await client.delete(*(self._prefix + key for key in keys))
            except Exception as exc:
                self._failed(exc)
                raise  # the value may still be in Redis: the invalidation must be retried
            self._answered()
        await self.fallback.delete(keys)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(slots=True)
class _Flight:
    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = MISSING
    error: BaseException | None = None
    computed: bool = False  # the value came from the factory, not the store


class Cache:
    """A store with single-flight per key (one worker process's view of the cache)."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._flights: dict[str, _Flight] = {}
        self._local: dict[str, tuple[float, Any]] = {}  # key -> (monotonic expiry, value)

    async def get(self, key: str, default: Any = None) -> Any:
        value = await self.store.get(key)
        return default if value is MISSING else value

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        await self.store.set(key, value, ttl_s)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._local.pop(key, None)
        await self.store.delete(list(keys))

    async def get_or_set(
        self, key: str, ttl_s: float, compute: Callable[[], Awaitable[Any]], local_s: float = 0.0
    ) -> tuple[Any, bool]:
        """The cached value of ``key``, or ``compute()``'s (cached for ``ttl_s``); and whether it
        was a hit. Concurrent calls for one key share one store read and one ``compute``. With
        ``local_s``, a value is also kept in this process' memory that long (at most ``ttl_s``)."""
        kept = self._local.get(key)
        if kept is not None:
            if kept[0] > time.monotonic():
                return kept[1], True
            del self._local[key]
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.error is None:
                return flight.value, True
            if isinstance(flight.error, Exception):
                raise flight.error
            # Its caller was cancelled (a timeout, a shutdown): not this caller's failure.
        flight = self._flights[key] = _Flight()
        try:
            value = await self.store.get(key)
            if value is MISSING:
                value = await compute()
                flight.computed = True
                await self.store.set(key, value, ttl_s)
            flight.value = value
            if local_s > 0:
                self._keep(key, value, min(local_s, ttl_s))
            return value, not flight.computed
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    def _keep(self, key: str, value: Any, seconds: float) -> None:
        self._local.pop(key, None)  # re-inserted last: the oldest entries are evicted first
        self._local[key] = (time.monotonic() + seconds, value)
        while len(self._local) > LOCAL_ENTRIES:
            del self._local[next(iter(self._local))]
