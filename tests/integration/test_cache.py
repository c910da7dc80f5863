"""The cache stores against real Postgres and real Redis: single-flight per key, TTLs, deletes,
and Redis failing over to pgobs.cache."""

from __future__ import annotations

import socket

import anyio
import pytest

from pgobs.db.connect import open_pool
from pgobs.reliability.cache import MISSING, Cache, PostgresCache, RedisCache
from pgobs.reliability.redisconn import RedisSettings
from tests.support import scalar

pytestmark = pytest.mark.anyio


class Source:
    """A lookup's source: counts calls; slow enough that every caller arrives before it ends."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self) -> dict[str, str]:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the source is down")
        return {"name": "Ada"}


async def crowd(cache: Cache, source: Source, count: int) -> list[object]:
    """``count`` concurrent get_or_set calls for one key; the source answers once all wait."""
    results: list[object] = []

    async def one() -> None:
        try:
            results.append(await cache.get_or_set("customer:1", 60, source))
        except RuntimeError as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
        await source.entered.wait()
        await anyio.wait_all_tasks_blocked()
        source.release.set()
    return results


async def test_100_concurrent_callers_for_one_key_make_one_call(dsn: str) -> None:
    async with open_pool(dsn) as pool:
        cache = Cache(PostgresCache(pool))
        source = Source()
        results = await crowd(cache, source, 100)
        assert source.calls == 1
        assert sorted(hit for _, hit in results) == [False] + [True] * 99
        assert {str(value) for value, _ in results} == {"{'name': 'Ada'}"}
        assert await cache.get("customer:1") == {"name": "Ada"}
        again = Source()
        again.release.set()
        assert await cache.get_or_set("customer:1", 60, again) == ({"name": "Ada"}, True)
        assert again.calls == 0


async def test_a_failing_source_fails_every_waiter_and_is_called_again_next_time(dsn: str) -> None:
    async with open_pool(dsn) as pool:
        cache = Cache(PostgresCache(pool))
        source = Source(fail=True)
        results = await crowd(cache, source, 20)
        assert source.calls == 1
        assert all(isinstance(r, RuntimeError) for r in results)
        assert scalar(dsn, "SELECT count(*) FROM pgobs.cache") == 0  # no empty value kept
        healthy = Source()
        healthy.release.set()
        assert await cache.get_or_set("customer:1", 60, healthy) == ({"name": "Ada"}, False)


async def test_postgres_entries_expire_and_delete(dsn: str) -> None:
    async with open_pool(dsn) as pool:
        store = PostgresCache(pool)
        await store.set("short", [1, 2], 0.001)
        await store.set("long", {"n": 1}, 60)
        await store.set("null", None, 60)
        assert await store.get("long") == {"n": 1}
        assert await store.get("null") is None  # null is a value, not a miss
        assert await store.get("short") is MISSING  # expired
        await store.delete(["long"])
        assert await store.get("long") is MISSING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_store_keeps_values_with_their_ttl(dsn: str, redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, prefix=f"pgobs:test-cache:{dsn}:")
    async with open_pool(dsn) as pool:
        store = RedisCache(settings, PostgresCache(pool))
        try:
            await store.set("customer:1", {"name": "Ada", "total": 1}, 60)
            await store.set("short", 1, 0.001)
            assert await store.get("customer:1") == {"name": "Ada", "total": 1}
            assert scalar(dsn, "SELECT count(*) FROM pgobs.cache") == 0
            with anyio.fail_after(10):
                while await store.get("short") is not MISSING:
                    await anyio.sleep(0.01)
            await store.delete(["customer:1"])
            assert await store.get("customer:1") is MISSING
        finally:
            await store.close()


async def test_redis_down_falls_back_to_postgres(dsn: str) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", prefix="pgobs:down:")
    async with open_pool(dsn) as pool:
        store = RedisCache(settings, PostgresCache(pool))
        try:
            await store.set("customer:1", {"name": "Ada"}, 60)
            assert await store.get("customer:1") == {"name": "Ada"}
            assert scalar(dsn, "SELECT count(*) FROM pgobs.cache") == 1
            # An invalidation Redis cannot confirm fails (the cache action is retried), even
            # within the second in which reads skip Redis.
            with pytest.raises(Exception, match="Connect"):
                await store.delete(["customer:1"])
        finally:
            await store.close()


async def test_a_worker_keeps_what_it_read_for_local_ttl_and_its_invalidation_clears_it(
    dsn: str,
) -> None:
    async with open_pool(dsn) as pool:
        cache = Cache(PostgresCache(pool))
        source = Source()
        source.release.set()
        assert await cache.get_or_set("customer:1", 60, source, local_s=60) == (
            {"name": "Ada"},
            False,
        )
        # Gone from the store behind this process' back (another worker's invalidation): this
        # process still answers from memory, for local_s at most.
        scalar(dsn, "DELETE FROM pgobs.cache RETURNING 1")
        assert await cache.get_or_set("customer:1", 60, source, local_s=60) == (
            {"name": "Ada"},
            True,
        )
        assert source.calls == 1
        await cache.delete("customer:1")  # its own invalidation clears its memory at once
        assert (await cache.get_or_set("customer:1", 60, source, local_s=60))[1] is False
        assert source.calls == 2
