"""``pgobs dlq``: look at dead letters and bring them back."""

from __future__ import annotations

import sys
from typing import Annotated, Any

from cyclopts import App, Parameter

from pgobs import jsoncodec
from pgobs.cli.session import Dsn, with_connection
from pgobs.db.connect import Connection
from pgobs.errors import PgobsError
from pgobs.queue import dlq

app = App(name="dlq", help="The dead-letter queue: jobs out of attempts or failed for good.")

COLUMNS = ("ID", "FAILED AT", "OBSERVER", "ACTION", "EVENT", "TRIES")
Observer = Annotated[str | None, Parameter(help="Only this observer's dead letters.")]


def _print_json(value: Any) -> None:
    print(jsoncodec.encode_indented(value))  # numbers in event data keep their digits


@app.command(name="list")
def list_(
    *, observer: Observer = None, limit: int = 20, json: bool = False, dsn: Dsn = None
) -> None:
    """List dead letters, newest first."""
    if limit < 1:
        raise PgobsError(f"--limit must be at least 1, got {limit}")
    rows = with_connection(dsn, lambda c: dlq.list_dead(c, observer, limit))
    if json:
        _print_json([r.as_json() for r in rows])
        return
    if not rows:
        print("the dead-letter queue is empty" + (f" for {observer}" if observer else ""))
        return
    print("{:>8}  {:<19}  {:<24} {:<20} {:>10} {:>5}  ERROR".format(*COLUMNS))
    for r in rows:
        error = (r.last_error or "").replace("\n", " ")
        print(
            f"{r.id:>8}  {r.failed_at:%Y-%m-%d %H:%M:%S}  {r.observer[:24]:<24} "
            f"{r.action[:20]:<20} {r.event_id:>10} {r.attempts:>5}  [{r.error_kind}] {error[:80]}"
        )


@app.command
def show(dlq_id: int, *, dsn: Dsn = None) -> None:
    """Show one dead letter in full: the job, the event, every attempt's error."""
    _print_json(with_connection(dsn, lambda c: dlq.show_dead(c, dlq_id)))


@app.command
def retry(dlq_id: int, *, dsn: Dsn = None) -> None:
    """Put one dead letter back in the queue with fresh attempts."""

    async def work(conn: Connection) -> int:
        await dlq.show_dead(conn, dlq_id)  # a clear error for an unknown id
        return await dlq.retry_dead(conn, [dlq_id])

    with_connection(dsn, work)
    print(f"dead letter {dlq_id} is queued again")


@app.command(name="retry-all")
def retry_all(*, observer: Observer = None, dry_run: bool = False, dsn: Dsn = None) -> None:
    """Put every dead letter (of an observer) back in the queue.

    Parameters
    ----------
    dry_run
        Say how many and which would be retried; change nothing.
    """

    def progress(done: int, total: int) -> None:
        if total > dlq.RETRY_BATCH:
            print(f"  {done}/{total}", file=sys.stderr)

    async def work(conn: Connection) -> tuple[list[int], int]:
        ids = await dlq.dead_ids(conn, observer)
        moved = 0 if dry_run else await dlq.retry_dead(conn, ids, progress)
        return ids, moved

    ids, moved = with_connection(dsn, work)
    scope = f" of {observer}" if observer else ""
    if dry_run:
        shown = ", ".join(map(str, ids[:50])) + (" …" if len(ids) > 50 else "")
        print(
            f"dry run: would retry {len(ids)} dead letter(s){scope}" + (": " + shown if ids else "")
        )
        return
    print(f"retried {moved} dead letter(s){scope}")


@app.command
def stats(*, by_observer: bool = False, json: bool = False, dsn: Dsn = None) -> None:
    """Counts of dead letters: total, transient, permanent, oldest and newest."""
    rows = with_connection(dsn, lambda c: dlq.stats(c, by_observer))
    if json:
        _print_json(rows if by_observer else rows[0])
        return
    if by_observer:
        if not rows:
            print("the dead-letter queue is empty")
        for r in rows:
            print(
                f"{r['observer']:<32} {r['total']:>8} total  {r['transient']:>8} transient  "
                f"{r['permanent']:>8} permanent  oldest {r['oldest']}"
            )
        return
    r = rows[0]
    print(f"total {r['total']}  (transient {r['transient']}, permanent {r['permanent']})")
    if r["total"]:
        print(f"oldest {r['oldest']}  newest {r['newest']}")


@app.command
def purge(
    *,
    older_than: Annotated[str, Parameter(help="Age like 30d, 12h, 15m.")],
    observer: Observer = None,
    dry_run: bool = False,
    dsn: Dsn = None,
) -> None:
    """Delete dead letters older than an age."""
    age = dlq.parse_age(older_than)
    count = with_connection(dsn, lambda c: dlq.purge(c, age, observer, dry_run))
    print(
        "would delete" if dry_run else "deleted", f"{count} dead letter(s) older than {older_than}"
    )
