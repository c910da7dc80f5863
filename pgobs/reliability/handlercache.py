"""``pgobs.cache``: the worker's enrichment cache, for async python handlers.

    import pgobs

    async def on_order(event: pgobs.Event) -> None:
        rate = await pgobs.cache.get_or_set(f"fx:{event.data['currency']}", fetch_rate, ttl_s=300)

It is the store the worker's lookups use (``pgobs.cache`` in Postgres, or Redis when configured),
with the same single-flight: concurrent handlers asking for one key make one ``compute`` call.
Values are JSON (objects, lists, strings, numbers, booleans, null).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing pgobs stays light: the worker brings the cache
    from pgobs.reliability.cache import Cache


class HandlerCache:
    def __init__(self) -> None:
        self._cache: Cache | None = None

    def activate(self, cache: Cache | None) -> None:
        """Set by the worker pool while it runs (None when it stops)."""
        self._cache = cache

    def _active(self) -> Cache:
        if self._cache is None:
            raise RuntimeError(
                "pgobs.cache is the worker's cache: use it in a handler that a pgobs worker runs"
            )
        return self._cache

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is not cached (or expired)."""
        return await self._active().get(key, default)

    async def set(self, key: str, value: Any, ttl_s: float) -> None:
        """Cache ``value`` under ``key`` for ``ttl_s`` seconds."""
        await self._active().set(key, value, ttl_s)

    async def delete(self, *keys: str) -> None:
        await self._active().delete(*keys)

    async def get_or_set(
        self, key: str, compute: Callable[[], Any | Awaitable[Any]], ttl_s: float
    ) -> Any:
        """The cached value of ``key``; on a miss ``compute()`` (sync or async) once, cached for
        ``ttl_s`` seconds."""

        async def value() -> Any:
            result = compute()
            return await result if inspect.isawaitable(result) else result

        found, _ = await self._active().get_or_set(key, ttl_s, value)
        return found


cache = HandlerCache()
