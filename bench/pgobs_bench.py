"""pgobs benchmarks: listener fan-out, queue burn-down, insert-to-done throughput, and
insert-to-handler latency. Each runs real ``pgobs worker`` processes on a fresh database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from percentiles import summarize
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@contextmanager
def fresh_db(admin_dsn: str, name: str) -> Iterator[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    subprocess.run(
        [sys.executable, "-m", "pgobs", "migrate", "--dsn", dsn], check=True, capture_output=True
    )
    try:
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def workers(
    dsn: str, config: str, args: list[list[str]], env: dict[str, str]
) -> Iterator[Callable[[], None]]:
    """Run ``pgobs worker`` processes; yields a check that raises, with the log's tail, once one
    has exited (a config or startup error), so a wait fails at once instead of timing out."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "observers.yaml"
        path.write_text(config)
        full_env = {
            **os.environ,
            **env,
            "PGOBS_DSN": dsn,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pgobs",
                    "worker",
                    "--config",
                    str(path),
                    "--metrics-port",
                    "0",
                    *a,
                ],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=open(Path(tmp) / f"{i}.log", "w"),  # noqa: SIM115
            )
            for i, a in enumerate(args)
        ]

        def check() -> None:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    tail = (Path(tmp) / f"{i}.log").read_text()[-2000:]
                    raise RuntimeError(
                        f"pgobs worker {' '.join(args[i])} exited with {p.returncode}:\n{tail}"
                    )

        try:
            yield check
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


def wait_report(path: Path, timeout: float, check: Callable[[], None]) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no report in {timeout}s at {path}")
        time.sleep(0.01)
    report: dict[str, object] = json.loads(path.read_text())
    return report


# -- listener fan-out --------------------------------------------------------------------------

ENTITIES = ["Order", "Invoice", "Customer", "Shipment", "Refund"]


def fanout_config() -> str:
    """10 observers over 5 entity types; two-clause conditions, so most events meet two."""
    lines = ["observers:"]
    for i in range(10):
        entity = ENTITIES[i % 5]
        cond = "status == 'paid' && total > 100" if i < 5 else "status != 'void' || total < 0"
        lines += [
            f"  - name: obs-{i}",
            f"    entity: {entity}",
            f'    condition: "{cond}"',
            "    actions: [{type: log}]",
        ]
    return "\n".join(lines) + "\n"


def bench_fanout(admin_dsn: str, events: int = 200_000, batch: int = 500) -> dict[str, float]:
    with fresh_db(admin_dsn, "pgobs_bench_fanout") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
                "SELECT (%s::text[])[1 + g %% 5], g::text, 'INSERT', jsonb_build_object("
                "'id', g, 'status', CASE WHEN g %% 3 = 0 THEN 'paid' ELSE 'new' END, "
                "'total', g %% 400, 'customer', jsonb_build_object('tier', 'gold'))"
                " FROM generate_series(1, %s) AS g",
                (ENTITIES, events),
            )
            conn.execute("VACUUM ANALYZE pgobs.events")
            with workers(
                dsn, fanout_config(), [["--role", "listener", "--batch-size", str(batch)]], {}
            ) as check:
                first = None
                while True:
                    check()
                    row = conn.execute("SELECT event_id FROM pgobs.checkpoints").fetchone()
                    now = time.perf_counter()
                    if row and first is None:
                        first = (now, row[0])
                    if row and row[0] >= events:
                        break
                    time.sleep(0.02)
                jobs = conn.execute("SELECT count(*) FROM pgobs.jobs").fetchone()
        assert first is not None and jobs is not None
        elapsed = now - first[0]
        done = events - first[1]
        return {
            "events_per_s": done / elapsed,
            "jobs_per_s": jobs[0] * done / events / elapsed,
            "jobs_per_event": jobs[0] / events,
        }


# -- burn-down ---------------------------------------------------------------------------------

NOOP_CONFIG = """
observers:
  - name: obs-noop
    entity: Bench
    actions: [{{type: python, name: noop, handler: "handlers:{handler}"}}]
"""


def bench_burndown(
    admin_dsn: str,
    jobs: int = 30_000,
    concurrency: int = 32,
    handler: str = "noop",
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """``jobs`` already queued, drained by one ``pgobs worker --role worker``; ``handler`` is
    ``noop`` (``async def``) or ``noop_sync`` (plain ``def``); ``extra``: more worker options,
    e.g. --no-trail."""
    with fresh_db(admin_dsn, "pgobs_bench_burndown") as dsn, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
                "SELECT 'Bench', g::text, 'INSERT', jsonb_build_object('id', g) "
                "FROM generate_series(1, %s) g",
                (jobs,),
            )
            conn.execute(
                "INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type) "
                "SELECT id, 'obs-noop', 'noop', 0, 'python' FROM pgobs.events"
            )
            conn.execute("VACUUM ANALYZE pgobs.events")
            conn.execute("VACUUM ANALYZE pgobs.jobs")
            out = Path(tmp) / "report.json"
            env = {"PGOBS_BENCH_N": str(jobs), "PGOBS_BENCH_OUT": str(out)}
            args = [["--role", "worker", "--concurrency", str(concurrency), *extra]]
            with workers(dsn, NOOP_CONFIG.format(handler=handler), args, env) as check:
                report = wait_report(out, 300, check)
                deadline = time.monotonic() + 30
                while conn.execute("SELECT EXISTS (SELECT 1 FROM pgobs.jobs)").fetchone() != (
                    False,
                ):
                    check()
                    if time.monotonic() > deadline:
                        raise TimeoutError("jobs left after the handler saw them all")
                    time.sleep(0.01)
                drained = time.time()
        elapsed = float(report["last"]) - float(report["first"])  # type: ignore[arg-type]
        return {
            "jobs_per_s": jobs / elapsed,
            "jobs_per_s_to_empty": jobs / (drained - float(report["first"])),
        }  # type: ignore[arg-type]


# -- insert to done ------------------------------------------------------------------------------


def bench_end_to_end(
    admin_dsn: str,
    rows: int = 30_000,
    processes: int = 2,
    chunk: int = 500,
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """``rows`` inserted in a tracked table while listener and workers run (``extra``: more
    worker options, e.g. --no-trail)."""
    with fresh_db(admin_dsn, "pgobs_bench_e2e") as dsn, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, payload text)")
            conn.execute("SELECT pgobs.track('bench', 'Bench')")
        out = Path(tmp) / "report.json"
        env = {"PGOBS_BENCH_N": str(rows // processes), "PGOBS_BENCH_OUT": str(out)}
        # One listener+worker process and the rest workers: each worker process counts its own
        # calls, so the first to reach its share writes the report; we then wait for the queue.
        args = [["--role", "all", "--concurrency", "32", *extra]] + [
            ["--role", "worker", "--concurrency", "32", *extra] for _ in range(processes - 1)
        ]
        with (
            workers(dsn, NOOP_CONFIG.format(handler="noop"), args, env) as check,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            time.sleep(2)  # the processes start and elect a leader
            started = time.time()
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                conn.execute(
                    "INSERT INTO bench (payload) SELECT 'x' FROM generate_series(1, %s)", (n,)
                )
            inserted = time.time()
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
            done = time.time()
        return {
            "events_per_s": rows / (done - started),
            "insert_s": inserted - started,
            "total_s": done - started,
        }


# -- latency -------------------------------------------------------------------------------------

LATENCY_CONFIG = """
observers:
  - name: obs-latency
    entity: Bench
    actions: [{type: python, handler: "handlers:latency"}]
"""


def bench_latency(admin_dsn: str, rate: int = 200, seconds: float = 10) -> dict[str, float]:
    """Single-row inserts at a steady ``rate``; INSERT sent → handler start. One warm-up row
    (no send time) must reach the handler before the timed inserts begin."""
    total = int(rate * seconds)
    with fresh_db(admin_dsn, "pgobs_bench_latency") as dsn, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, sent float8)")
            conn.execute("SELECT pgobs.track('bench', 'Bench')")
        out = Path(tmp) / "report.json"
        env = {"PGOBS_BENCH_N": str(total), "PGOBS_BENCH_OUT": str(out)}
        with (
            workers(dsn, LATENCY_CONFIG, [["--role", "all", "--concurrency", "32"]], env) as check,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            conn.execute("INSERT INTO bench (sent) VALUES (NULL)")
            wait_report(out.with_name(out.name + ".ready"), 60, check)
            interval = 1 / rate
            next_at = time.perf_counter()
            for _ in range(total):
                next_at += interval
                conn.execute("INSERT INTO bench (sent) VALUES (%s)", (time.time(),))
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            report = wait_report(out, 60, check)
    return summarize(report["latencies"])  # type: ignore[arg-type]


if __name__ == "__main__":
    admin = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres"
    which = sys.argv[2:] or ["fanout", "burndown", "e2e", "latency"]
    runs = {
        "fanout": bench_fanout,
        "burndown": bench_burndown,
        "e2e": bench_end_to_end,
        "latency": bench_latency,
    }
    for name in which:
        print(name, runs[name](admin), flush=True)
