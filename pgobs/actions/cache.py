"""The cache action: invalidates cached results by key (keys are templates)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgobs.actions.specs import CacheSpec
from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query


async def invalidate(
    pool: AsyncConnectionPool[Connection], spec: CacheSpec, context: dict[str, Any]
) -> None:
    keys = [key.render(context) for key in spec.keys]
    async with pool.connection() as conn:
        await conn.execute(query("cache_invalidate"), {"keys": keys})
