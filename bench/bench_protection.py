"""The cost of protection: the dedup check in the fan-out, a cache hit, and end-to-end events/s
with dedup on every observer and a cached lookup against the same run without them.

    python bench/bench_protection.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/0] [--events 50000] [--rows 20000] [--rounds 1]

Each part runs on a fresh database of the server (and a key prefix of its own in Redis).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from pgobs_bench import fresh_db, workers  # noqa: E402

from pgobs.config.loader import parse_config  # noqa: E402
from pgobs.db.connect import connect, open_pool  # noqa: E402
from pgobs.db.notify import Doorbell  # noqa: E402
from pgobs.db.sqlfiles import query  # noqa: E402
from pgobs.listener.listener import Checkpoint, Listener, ListenerSettings  # noqa: E402
from pgobs.reliability.cache import Cache, PostgresCache, RedisCache  # noqa: E402
from pgobs.reliability.redisconn import redis_settings  # noqa: E402

# -- the dedup check inside the fan-out ---------------------------------------------------------


def fanout_config(dedup: bool) -> str:
    lines = ["observers:"]
    for i in range(5):
        lines += [f"  - name: obs-{i}", "    entity: Bench", "    actions: [{type: log}]"]
        if dedup:
            lines.append("    dedup: {window: 5m}")
    return "\n".join(lines) + "\n"


class CountingConnection:
    """Counts the statements a batch sends (each is one round trip)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await self.conn.execute(*args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.conn.cursor(*args, **kwargs)


def bench_fanout(admin_dsn: str, events: int, mode: str, redis_url: str | None) -> dict[str, float]:
    """Fan out ``events`` rows through five observers, batch 500, in one process."""
    with fresh_db(admin_dsn, "pgobs_bench_dedup") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, payload text)")
            conn.execute("SELECT pgobs.track('bench', 'Bench')")
            conn.execute(
                "INSERT INTO bench (payload) SELECT md5(i::text) FROM generate_series(1, %s) i",
                (events,),
            )
        config, issues = parse_config(fanout_config(mode != "off"), "bench")
        assert config is not None, issues
        redis = redis_settings(redis_url, dsn) if mode == "redis" else None
        listener = Listener(dsn, config, Doorbell(), ListenerSettings(redis=redis))

        async def run() -> tuple[float, int, int]:
            conn = await connect(dsn, autocommit=True)
            await conn.execute(query("listener_session_settings"))  # as the leader's session
            counting = CountingConnection(conn)
            checkpoint = Checkpoint()
            batches = 0
            try:
                started = time.perf_counter()
                while await listener._fan_out_batch(counting, checkpoint):  # type: ignore[arg-type]
                    batches += 1
                return time.perf_counter() - started, batches, counting.statements
            finally:
                await conn.close()
                if listener.dedup_redis is not None:
                    await listener.dedup_redis.close()

        elapsed, batches, statements = anyio.run(run)
        with psycopg.connect(dsn, autocommit=True) as conn:
            jobs = conn.execute("SELECT count(*) FROM pgobs.jobs").fetchone()
        assert jobs == (events * 5,), jobs
        return {
            "events_per_s": events / elapsed,
            "us_per_event": elapsed / events * 1e6,
            "statements_per_batch": (statements - 1) / batches,  # the last read finds nothing
        }


# -- cache hits ---------------------------------------------------------------------------------


def bench_cache_hits(admin_dsn: str, redis_url: str | None, lookups: int = 3000) -> dict[str, Any]:
    with fresh_db(admin_dsn, "pgobs_bench_cache") as dsn:

        async def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with open_pool(dsn) as pool:
                postgres = PostgresCache(pool)
                stores: list[tuple[str, Any]] = [("postgres", postgres)]
                redis = redis_settings(redis_url, dsn)
                if redis is not None:
                    stores.append(("redis", RedisCache(redis, postgres)))
                for name, store in stores:
                    cache = Cache(store)
                    await store.set("customer:1", {"id": 1, "name": "Ada", "tier": "gold"}, 600)

                    async def never() -> None:
                        raise AssertionError("a hit must not compute")

                    times = []
                    for _ in range(lookups):
                        started = time.perf_counter()
                        _, hit = await cache.get_or_set("customer:1", 600, never)
                        times.append(time.perf_counter() - started)
                        assert hit
                    times.sort()
                    out[name] = {
                        "p50_ms": times[len(times) // 2] * 1000,
                        "p99_ms": times[int(len(times) * 0.99)] * 1000,
                    }
                    if isinstance(store, RedisCache):
                        await store.close()
            return out

        return anyio.run(run)


# -- end to end ---------------------------------------------------------------------------------

# Without protection: breakers (on by default for every action with a target) switched off.
E2E_PLAIN = """
defaults: {circuit: {enabled: false}}
observers:
  - name: obs-bench
    entity: Bench
    actions: [{type: python, handler: "handlers:noop"}]
"""
E2E_PROTECTED = """
observers:
  - name: obs-bench
    entity: Bench
    dedup: {window: 5m}
    enrich:
      - name: customer
        sql: "SELECT id, name FROM customers WHERE id = %(customer_id)s"
        cache: {key: "customer:{{ data.customer_id }}", ttl: 5m}
    actions:
      - {type: python, handler: "handlers:noop", circuit: {failure_threshold: 0.5, window: 30s}}
"""


def bench_end_to_end(
    admin_dsn: str, rows: int, config: str, redis_url: str | None, processes: int = 2
) -> float:
    """``rows`` inserted (500 per transaction) until every action is done; events/s."""
    with fresh_db(admin_dsn, "pgobs_bench_protect") as dsn, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO customers SELECT i, 'c' || i FROM generate_series(0, 9) i")
            conn.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, customer_id int)")
            conn.execute("SELECT pgobs.track('bench', 'Bench')")
        env = {"PGOBS_BENCH_N": str(rows // processes), "PGOBS_BENCH_OUT": f"{tmp}/report.json"}
        extra = ["--redis-url", redis_url] if redis_url else []
        args = [["--role", "all", "--concurrency", "32", *extra]] + [
            ["--role", "worker", "--concurrency", "32", *extra] for _ in range(processes - 1)
        ]
        with workers(dsn, config, args, env) as check, psycopg.connect(dsn) as conn:
            conn.autocommit = True
            time.sleep(2)  # the processes start and elect a leader
            started = time.time()
            for start in range(0, rows, 500):
                conn.execute(
                    "INSERT INTO bench (customer_id) "
                    "SELECT i %% 10 FROM generate_series(%s::int, %s::int) i",
                    (start, min(start + 500, rows) - 1),
                )
            deadline = time.monotonic() + 120
            while True:
                left = conn.execute(
                    "SELECT (SELECT count(*) FROM pgobs.jobs) + "
                    "(SELECT count(*) FROM pgobs.events WHERE id > coalesce("
                    "(SELECT event_id FROM pgobs.checkpoints), 0))"
                ).fetchone()
                if left == (0,):
                    break
                check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{left} left after 120s")
                time.sleep(0.01)
            return rows / (time.time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--parts", default="fanout,cache,e2e", help="comma-separated: fanout, cache, e2e"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if "fanout" in parts:
        fanout_part(args)
    if "cache" in parts:
        cache_part(args)
    if "e2e" in parts:
        e2e_part(args)


def fanout_part(args: argparse.Namespace) -> None:
    print(f"## Dedup check in the fan-out: {args.events:,} events x 5 observers, batch 500")
    modes = ["off", "postgres"] + (["redis"] if args.redis_url else [])
    fanout = {m: bench_fanout(args.dsn, args.events, m, args.redis_url) for m in modes}
    for mode, result in fanout.items():
        cost = result["us_per_event"] - fanout["off"]["us_per_event"]
        print(
            f"- dedup {mode}: {result['events_per_s']:,.0f} events/s, "
            f"{result['statements_per_batch']:.2f} statements per batch, "
            f"{cost:+.1f} us per event (5 checks) against dedup off"
        )


def cache_part(args: argparse.Namespace) -> None:
    print("\n## Cache hit, get_or_set on a warm key (sequential)")
    for store, result in bench_cache_hits(args.dsn, args.redis_url).items():
        print(f"- {store}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms")


def e2e_part(args: argparse.Namespace) -> None:
    print(f"\n## End to end: {args.rows:,} rows, 2 worker processes, no-op handler")
    plain, protected = [], []
    for _ in range(args.rounds):
        plain.append(bench_end_to_end(args.dsn, args.rows, E2E_PLAIN, None))
        protected.append(bench_end_to_end(args.dsn, args.rows, E2E_PROTECTED, args.redis_url))
    p, q = statistics.median(plain), statistics.median(protected)
    where = "Redis" if args.redis_url else "Postgres"
    rounds = ", ".join(f"{x:,.0f}" for x in plain)
    print(f"- without protection: {p:,.0f} events/s (rounds {rounds})")
    print(
        f"- dedup + cached SQL lookup ({where}): {q:,.0f} events/s "
        f"(rounds {', '.join(f'{x:,.0f}' for x in protected)})"
    )
    print(f"- protected / plain = {q / p:.0%} (target >= 85%)")


if __name__ == "__main__":
    main()
