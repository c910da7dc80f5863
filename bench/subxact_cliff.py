"""What a long writing transaction on a tracked table costs other sessions' reads, with capture
as it was (a subtransaction per statement) and as it is (none for ordinary rows).

    python bench/subxact_cliff.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
                                  [--statements 1000] [--rows 50] [--rounds 3]

A writer runs ``--statements`` INSERTs of ``--rows`` rows each into a tracked table and keeps its
transaction open; meanwhile another session counts the table's rows. Past 64 subtransactions
a snapshot's subtransaction cache overflows, and every reader must look each in-progress row's
xid up in pg_subtrans instead of in its snapshot. Modes are interleaved round by round on one
fresh database; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import anyio
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgobs.db.migrate import migrate

# Migration 0002's capture_rows, as it was: each statement's INSERT in a subtransaction.
PER_STATEMENT_SUBTRANSACTION = """
CREATE OR REPLACE FUNCTION pgobs.capture_rows_0002() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        INSERT INTO pgobs.events (entity_type, entity_id, event_type, data)
        SELECT TG_ARGV[0], d ->> TG_ARGV[1], 'INSERT', d
        FROM (SELECT to_jsonb(captured.*) AS d FROM new_rows AS captured) AS rows;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'not reached in this benchmark';
    END;
    RETURN NULL;
END;
$$
"""

MODES = {"subtransaction per statement (0002)": "capture_rows_0002", "none (0005)": "capture_rows"}


def round_of(dsn: str, function: str, statements: int, rows: int) -> tuple[float, float, float]:
    """Reader's median count time (ms) before the writer starts, while its transaction is open,
    and the writer's own time per statement (ms)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DROP TRIGGER IF EXISTS pgobs_capture_insert ON orders")
        admin.execute(
            sql.SQL(
                "CREATE TRIGGER pgobs_capture_insert AFTER INSERT ON orders "
                "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                "EXECUTE FUNCTION pgobs.{}('Order', 'id')"
            ).format(sql.Identifier(function))
        )
        admin.execute("VACUUM orders")
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn) as writer:
        idle = reads(reader)
        started = time.perf_counter()
        for _ in range(statements):
            writer.execute(
                "INSERT INTO orders (status) SELECT 'new' FROM generate_series(1, %s)", (rows,)
            )
        per_statement = (time.perf_counter() - started) / statements * 1000
        busy = reads(reader)
        writer.rollback()
    return idle, busy, per_statement


def reads(conn: psycopg.Connection[tuple[object, ...]], times: int = 15) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        conn.execute("SELECT count(*) FROM orders").fetchone()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"pgobs_bench_subxact_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
    try:
        anyio.run(lambda: migrate(dsn))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(PER_STATEMENT_SUBTRANSACTION)
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
            conn.execute("INSERT INTO orders (status) SELECT 'old' FROM generate_series(1, 200000)")
        results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, function in MODES.items():
                results[mode].append(round_of(dsn, function, args.statements, args.rows))
        print(
            f"{args.statements} INSERT statements of {args.rows} rows in one open transaction; "
            "another session counts the table's 200,000 committed rows (median ms)"
        )
        print("| subtransactions | count, no writer | count, writer open | writer ms/statement |")
        print("|---|---|---|---|")
        for mode, rounds in results.items():
            idle, busy, write = (statistics.median(r[i] for r in rounds) for i in range(3))
            print(f"| {mode} | {idle:.1f} | {busy:.1f} | {write:.2f} |")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
