"""The trail's cost and the search sink's preparation rate.

1. End-to-end events/s (bench_end_to_end: inserts in a tracked table, a listener and workers
   running no-op handlers) with the trail on and with --no-trail, alternating, several rounds.
2. Bulk-body preparation for Elasticsearch: trail rows read by trail_ship_batch and turned into
   bulk actions (pgobs.trail.shipper.prepare), per second in one process. With no server here,
   this is the shipper's ceiling on the pgobs side.

    PYTHONPATH=. python bench/bench_search.py --dsn postgresql://postgres@127.0.0.1/postgres \\
        --rows 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pgobs_bench import bench_end_to_end, fresh_db  # noqa: E402

from pgobs.db.sqlfiles import query  # noqa: E402
from pgobs.trail.shipper import SINK, prepare  # noqa: E402


def trail_cost(dsn: str, rows: int, rounds: int) -> dict[str, float]:
    on, off = [], []
    for _ in range(rounds):
        off.append(bench_end_to_end(dsn, rows=rows, extra=("--no-trail",))["events_per_s"])
        on.append(bench_end_to_end(dsn, rows=rows)["events_per_s"])
    return {
        "trail_on_events_per_s": statistics.median(on),
        "trail_off_events_per_s": statistics.median(off),
        "ratio": statistics.median(on) / statistics.median(off),
        "rounds_on": on,  # type: ignore[dict-item]
        "rounds_off": off,  # type: ignore[dict-item]
    }


def preparation_rate(admin_dsn: str, records: int) -> dict[str, float]:
    with fresh_db(admin_dsn, "pgobs_bench_search") as dsn, psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pgobs.trail (kind, status, event_id, entity_type, entity_id, "
            "event_type, tenant, actor, observers, data) "
            "SELECT 'event', 'matched', g, 'Order', g::text, 'INSERT', 'acme', 'api', "
            "ARRAY['obs-a', 'obs-b'], jsonb_build_object('id', g, 'status', 'paid', "
            "'total', g * 1.5, 'customer', jsonb_build_object('id', g %% 100, 'name', 'Acme'))"
            " FROM generate_series(1, %s) AS g",
            (records,),
        )
        conn.commit()
        read_s = prep_s = 0.0
        shipped = 0
        with conn.cursor(row_factory=dict_row) as cur:
            started = time.perf_counter()
            cur.execute(query("trail_ship_batch"), {"sink": SINK, "limit": records})
            rows = cur.fetchall()
            read_s = time.perf_counter() - started
        for start in range(0, len(rows), 2000):
            began = time.perf_counter()
            bulk = prepare(rows[start : start + 2000])
            prep_s += time.perf_counter() - began
            shipped += len(bulk.actions)
    return {
        "records": shipped,
        "read_per_s": shipped / read_s,
        "prepare_per_s": shipped / prep_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    print("bulk-body preparation:", preparation_rate(args.dsn, args.records))
    if not args.skip_e2e:
        print("end to end:", trail_cost(args.dsn, args.rows, args.rounds))


if __name__ == "__main__":
    main()
