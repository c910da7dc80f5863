"""Every pgobs benchmark in one run, beside the peer queues on the same server, written to
bench/RESULTS.md.

    python bench/run.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 3]
                        [--jobs 30000] [--latency-seconds 10]

Needs ``pip install -e '.[bench]'`` and a Postgres it may create databases on. Burn-downs of
pgobs (an ``async def`` and a plain ``def`` handler), pgqueuer and procrastinate are
interleaved round by round, as are the pgobs and pgqueuer latency runs, and the medians
reported, so background noise falls on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench_conditions  # noqa: E402
import peers  # noqa: E402
import pgobs_bench  # noqa: E402

from pgobs.conditions import compile_condition  # noqa: E402

BURNDOWN_ROWS = {  # run name → the row's label
    "pgobs": "pgobs, `async def` handler",
    "pgobs-sync": "pgobs, plain `def` handler",
    "pgqueuer": "pgqueuer",
    "procrastinate": "procrastinate",
}
LATENCY_RATE = 200  # single jobs per second, as bench_latency has always run
LATENCY_KEYS = ("p50_ms", "p99_ms", "max_ms")


def machine(dsn: str) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem} GiB",
        f"- PostgreSQL {row[0] if row else '?'} on the same machine; "
        f"Python {platform.python_version()}",
        f"- pgqueuer {version('pgqueuer')}, procrastinate {version('procrastinate')}, "
        f"psycopg {psycopg.__version__}, asyncpg {version('asyncpg')}",
    ]


def conditions() -> float:
    events = bench_conditions.make_events(10_000)
    rate, _ = bench_conditions.measure(
        compile_condition("status == 'paid' && total > 100"), events, 2.0
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGOBS_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    started = time.time()

    print("conditions …", flush=True)
    cond_rate = conditions()
    print("listener fan-out …", flush=True)
    fanout = pgobs_bench.bench_fanout(args.dsn)
    runs: dict[str, list[float]] = {name: [] for name in BURNDOWN_ROWS}
    for round_ in range(args.rounds):
        print(f"burn-down round {round_ + 1}/{args.rounds} …", flush=True)
        for name, handler in (("pgobs", "noop"), ("pgobs-sync", "noop_sync")):
            result = pgobs_bench.bench_burndown(args.dsn, args.jobs, handler=handler)
            runs[name].append(result["jobs_per_s"])
        runs["pgqueuer"].append(asyncio.run(peers.pgqueuer_burndown(args.dsn, args.jobs)))
        runs["procrastinate"].append(asyncio.run(peers.procrastinate_burndown(args.dsn, args.jobs)))
    burn = {name: statistics.median(values) for name, values in runs.items()}
    print("end to end …", flush=True)
    e2e = max(
        (
            {**pgobs_bench.bench_end_to_end(args.dsn, args.jobs, processes=p), "processes": p}
            for p in (1, 2)
        ),
        key=lambda r: r["events_per_s"],
    )
    lat_runs: dict[str, list[dict[str, float]]] = {"pgobs": [], "pgqueuer": []}
    for round_ in range(args.rounds):
        print(f"latency round {round_ + 1}/{args.rounds} …", flush=True)
        lat_runs["pgobs"].append(
            pgobs_bench.bench_latency(args.dsn, LATENCY_RATE, args.latency_seconds)
        )
        lat_runs["pgqueuer"].append(
            asyncio.run(peers.pgqueuer_latency(args.dsn, LATENCY_RATE, args.latency_seconds))
        )
    lat = {
        name: {key: statistics.median(r[key] for r in values) for key in LATENCY_KEYS}
        for name, values in lat_runs.items()
    }

    def row(name: str) -> str:
        values = ", ".join(f"{v:,.0f}" for v in runs[name])
        return f"| {BURNDOWN_ROWS[name]} | {burn[name]:,.0f} | {values} |"

    def lat_row(name: str, hops: str) -> str:
        rounds = "; ".join(
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f}" for r in lat_runs[name]
        )
        m = lat[name]
        return (
            f"| {name} | {hops} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['max_ms']:.1f} "
            f"| {rounds} |"
        )

    command = (
        f"python bench/run.py --rounds {args.rounds} --jobs {args.jobs} "
        f"--latency-seconds {args.latency_seconds:g}"
    )
    latency_run = f"{LATENCY_RATE} single jobs/s for {args.latency_seconds:g} s"
    lines = [
        "# Benchmarks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({time.time() - started:.0f} s). Burn-downs and latency runs: {args.rounds} "
        "interleaved round(s) each, medians reported.",
        "",
        *machine(args.dsn),
        "",
        f"## Burn-down: {args.jobs:,} no-op jobs already queued, drained by one process",
        "",
        "pgobs: one `pgobs worker --role worker --concurrency 32` running a no-op `python` "
        "action, once written `async def` and once plain `def`; pgqueuer: asyncpg driver, "
        "`batch_size=100`; procrastinate: psycopg connector, concurrency 32. Each on a fresh "
        "database of the same server, interleaved by round.",
        "",
        "| queue | jobs/s (median) | rounds |",
        "|---|---|---|",
        *(row(name) for name in BURNDOWN_ROWS),
        "",
        f"pgobs / pgqueuer = **{burn['pgobs'] / burn['pgqueuer']:.2f}×** (target ≥ 1.5×); "
        f"pgobs / procrastinate = **{burn['pgobs'] / burn['procrastinate']:.1f}×** "
        "(target ≥ 10×); pgobs `def` / `async def` = "
        f"**{burn['pgobs-sync'] / burn['pgobs']:.2f}×** (target ≥ 0.5×).",
        "",
        f"## Latency beside pgqueuer: {latency_run}",
        "",
        "pgobs: single-row INSERTs into a tracked table, one `pgobs worker --role all "
        "--concurrency 32`, timed from the INSERT sent to the handler's start: two hops "
        "(trigger → listener → job → worker). pgqueuer: single `enqueue` calls, one "
        "`QueueManager` process (asyncpg driver, `batch_size=100`), timed from the enqueue sent "
        "to the entrypoint's start: one hop. Writer and consumer are separate processes for "
        "both; one warm-up job runs before timing starts; each on a fresh database, "
        "interleaved by round.",
        "",
        "| queue | path | p50 ms | p99 ms | max ms | rounds (p50 / p99 / max) |",
        "|---|---|---|---|---|---|",
        lat_row("pgobs", "INSERT → handler, two hops"),
        lat_row("pgqueuer", "enqueue → entrypoint, one hop"),
        "",
        f"pgobs / pgqueuer: p50 **{lat['pgobs']['p50_ms'] / lat['pgqueuer']['p50_ms']:.2f}×** "
        f"(target ≤ 1×), p99 **{lat['pgobs']['p99_ms'] / lat['pgqueuer']['p99_ms']:.2f}×** "
        "(target ≤ 1.5×).",
        "",
        "## The rest of the path",
        "",
        "| benchmark | result | target |",
        "|---|---|---|",
        f"| condition `status == 'paid' && total > 100`, one core | {cond_rate:,.0f} evals/s | "
        "≥ 500,000 (cel-python: about 7,500) |",
        f"| listener fan-out, batch 500, 10 observers, 200,000 events | "
        f"{fanout['events_per_s']:,.0f} events/s ({fanout['jobs_per_s']:,.0f} jobs/s, "
        f"{fanout['jobs_per_event']:.2f} jobs per event) | ≥ 30,000 events/s |",
        f"| end to end: {args.jobs:,} rows inserted in a tracked table (500 per transaction) "
        f"until every action is done, {e2e['processes']:.0f} worker process(es) | "
        f"{e2e['events_per_s']:,.0f} events/s "
        f"(inserts took {e2e['insert_s']:.1f} s of {e2e['total_s']:.1f} s) | ≥ 15,000 /s |",
        f"| latency, INSERT sent to handler start, {latency_run} (medians of the rounds above) "
        f"| p50 {lat['pgobs']['p50_ms']:.2f} ms, p99 {lat['pgobs']['p99_ms']:.2f} ms, max "
        f"{lat['pgobs']['max_ms']:.1f} ms | p50 ≤ 3 ms, p99 ≤ 10 ms |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
