"""What a circuit breaker costs a job: the worker's hot path in isolation, and a burn-down of
no-op jobs with every action's breaker on (the default) against the same run with it off.

Run: ``python bench/bench_circuit.py [--rounds 2] [--jobs 20000] [--dsn ...]``. The breaker's
per-job work is a dict lookup, a state check and a counter; its reports are one statement a
second per worker, whatever the rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
import pgobs_bench

from pgobs.config.loader import parse_config
from pgobs.queue.circuits import CLOSED, CircuitBoard
from pgobs.queue.jobs import Job

ONE_ACTION = (
    "observers: [{name: obs-noop, entity: Bench, "
    "actions: [{type: python, name: noop, handler: 'json:dumps'}]}]"
)
OFF = "defaults:\n  circuit: {{enabled: false}}\n"


def hot_path_ns(calls: int = 1_000_000) -> float:
    """Nanoseconds per job of what the runner does for its circuit: find it, check it, count."""
    config, _ = parse_config(ONE_ACTION)
    assert config is not None

    async def run() -> float:
        board = CircuitBoard(None, config.observers)  # type: ignore[arg-type]  # no I/O on this path
        job = Job(1, 1, "obs-noop", "noop", 0, 1, 5, None)
        started = time.perf_counter()
        for _ in range(calls):
            circuit = board.of(job)
            if circuit is not None and circuit.state != CLOSED:
                raise AssertionError("the circuit opened")
            if circuit is not None:
                board.record(circuit, job, None)
        return (time.perf_counter() - started) / calls * 1e9

    return anyio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(f"hot path: {hot_path_ns():.0f} ns per job")
    base = pgobs_bench.NOOP_CONFIG
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for name, config in (("off", OFF + base), ("on", base)):
            pgobs_bench.NOOP_CONFIG = config  # bench_burndown's config, breaker on or off
            result = pgobs_bench.bench_burndown(args.dsn, jobs=args.jobs)
            rates[name].append(result["jobs_per_s"])
            print(f"burn-down, breaker {name}: {result['jobs_per_s']:,.0f} jobs/s", flush=True)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(f"median: on {on:,.0f} jobs/s, off {off:,.0f} jobs/s, on/off = {on / off:.2f}")


if __name__ == "__main__":
    main()
