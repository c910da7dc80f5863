"""Every pgobs benchmark in one run, beside the peer queues on the same server, written to
bench/RESULTS.md.

    python bench/run.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 3]

Needs ``pip install -e '.[bench]'`` and a Postgres it may create databases on. Burn-downs of
pgobs, pgqueuer and procrastinate are interleaved round by round and the medians reported, so
background noise falls on all of them alike.
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
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    started = time.time()

    print("conditions …", flush=True)
    cond_rate = conditions()
    print("listener fan-out …", flush=True)
    fanout = pgobs_bench.bench_fanout(args.dsn)
    runs: dict[str, list[float]] = {"pgobs": [], "pgqueuer": [], "procrastinate": []}
    for round_ in range(args.rounds):
        print(f"burn-down round {round_ + 1}/{args.rounds} …", flush=True)
        runs["pgobs"].append(pgobs_bench.bench_burndown(args.dsn, args.jobs)["jobs_per_s"])
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
    print("latency …", flush=True)
    latency = pgobs_bench.bench_latency(args.dsn)

    def row(name: str) -> str:
        values = ", ".join(f"{v:,.0f}" for v in runs[name])
        return f"| {name} | {burn[name]:,.0f} | {values} |"

    lines = [
        "# Benchmarks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python bench/run.py "
        f"--rounds {args.rounds} --jobs {args.jobs}` ({time.time() - started:.0f} s).",
        "",
        *machine(args.dsn),
        "",
        "## Burn-down: 30,000 no-op jobs already queued, drained by one process",
        "",
        "pgobs: one `pgobs worker --role worker --concurrency 32`, an async no-op `python` action; "
        "pgqueuer: asyncpg driver, `batch_size=100`; procrastinate: psycopg connector, "
        "concurrency 32. Each on a fresh database of the same server, interleaved by round.",
        "",
        "| queue | jobs/s (median) | rounds |",
        "|---|---|---|",
        row("pgobs"),
        row("pgqueuer"),
        row("procrastinate"),
        "",
        f"pgobs / pgqueuer = **{burn['pgobs'] / burn['pgqueuer']:.2f}×** (target ≥ 1.5×); "
        f"pgobs / procrastinate = **{burn['pgobs'] / burn['procrastinate']:.1f}×** "
        "(target ≥ 10×).",
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
        f"| latency, INSERT sent to handler start, 200 single-row inserts/s for 10 s | "
        f"p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms, max "
        f"{latency['max_ms']:.1f} ms | p50 ≤ 3 ms, p99 ≤ 10 ms |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
