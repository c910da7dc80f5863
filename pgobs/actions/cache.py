"""The cache action: invalidates cached results by key (keys are templates), in whichever store
the worker's cache uses (``pgobs.cache``, or Redis and ``pgobs.cache``)."""

from __future__ import annotations

from typing import Any

from pgobs.actions.specs import CacheSpec
from pgobs.reliability.cache import Cache


async def invalidate(cache: Cache, spec: CacheSpec, context: dict[str, Any]) -> None:
    await cache.delete(*(key.render(context) for key in spec.keys))
