"""``pgobs dlq``: look at dead letters, bring them back, remove them."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

from cyclopts import App, Parameter

from pgobs.cli.output import Format, JsonFlag, print_json, wants_json
from pgobs.cli.session import Dsn, with_connection
from pgobs.conditions.explain import render_value
from pgobs.db.connect import Connection
from pgobs.errors import BadOption, PgobsError
from pgobs.queue import dlq

app = App(name="dlq", help="The dead-letter queue: jobs out of attempts or failed for good.")

COLUMNS = ("ID", "FAILED AT", "OBSERVER", "ACTION", "EVENT", "ENTITY ID", "TRIES")
Observer = Annotated[str | None, Parameter(help="Only this observer's dead letters.")]
Force = Annotated[bool, Parameter(negative=())]


@app.command(name="list")
def list_(
    *,
    observer: Observer = None,
    limit: int = 20,
    offset: Annotated[int, Parameter(help="Skip this many (the next page).")] = 0,
    after: Annotated[
        datetime | None, Parameter(help="Only those failed after this time (ISO 8601).")
    ] = None,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """List dead letters, newest first."""
    if limit < 1:
        raise BadOption(f"--limit must be at least 1, got {limit}")
    if offset < 0:
        raise BadOption(f"--offset must not be negative, got {offset}")
    rows = with_connection(dsn, lambda c: dlq.list_dead(c, observer, limit, offset, after))
    if wants_json(json, format):
        print_json([r.as_json() for r in rows])
        return
    if not rows:
        print("no dead letters" + (f" for {observer}" if observer else "") + _page(offset, after))
        return
    print("{:>8}  {:<19}  {:<24} {:<16} {:>10} {:<16} {:>5}  ERROR".format(*COLUMNS))
    for r in rows:
        error = (r.last_error or "").replace("\n", " ")
        print(
            f"{r.id:>8}  {r.failed_at:%Y-%m-%d %H:%M:%S}  {r.observer[:24]:<24} "
            f"{r.action[:16]:<16} {r.event_id:>10} {(r.entity_id or '-')[:16]:<16} "
            f"{r.attempts:>5}  [{r.error_kind}] {error[:80]}"
        )


def _page(offset: int, after: datetime | None) -> str:
    parts = ([f"past the first {offset}"] if offset else []) + (
        [f"failed after {after.isoformat()}"] if after else []
    )
    return f" ({', '.join(parts)})" if parts else ""


@app.command
def show(dlq_id: int, *, json: JsonFlag = False, format: Format = "text", dsn: Dsn = None) -> None:
    """Show one dead letter in full: what failed, why, every attempt's error, the event."""
    found = with_connection(dsn, lambda c: dlq.show_dead(c, dlq_id))
    if wants_json(json, format):
        print_json(found)
        return
    for line in describe(found):
        print(line)


def describe(d: dict[str, Any]) -> list[str]:
    """A dead letter for people: what failed, why, when, the attempts, then the event."""
    event = d.get("event") or {}
    lines = [
        f"dead letter {d['id']}",
        f"  observer:     {d['observer']}",
        f"  action:       {d.get('action') or '#' + str(d['action_index'])} ({d['action_type']})",
        f"  event:        {d['event_id']} — {event.get('entity_type', '?')} "
        f"{event.get('entity_id') or ''} {event.get('event_type', '')}".rstrip(),
        f"  attempts:     {d['attempts']} of {d['max_attempts']}",
        f"  error kind:   {d['error_kind']}",
        f"  last error:   {d.get('last_error') or ''}",
        f"  failed at:    {d['failed_at']}",
        f"  queued at:    {d['created_at']}",
        f"  job:          {d['job_id']} (priority {d['priority']})",
        "  errors:",
    ]
    lines += [f"    - {_history_line(e)}" for e in d.get("errors") or []] or ["    (none)"]
    if event.get("data") is not None:
        lines.append(f"  data:         {render_value(event['data'])}")
    if event.get("old_data") is not None:
        lines.append(f"  old data:     {render_value(event['old_data'])}")
    payload = d.get("payload")
    if payload is not None and payload != event:
        lines.append(f"  payload:      {render_value(payload)}")
    return lines


def _history_line(e: Any) -> str:
    if not isinstance(e, dict):
        return str(e)
    if "retried_from_dlq" in e:
        return f"{e.get('at')}  retried from dead letter {e['retried_from_dlq']}"
    worker = f" (worker {e['worker']})" if e.get("worker") else ""
    return f"{e.get('at')}  attempt {e.get('attempt')} [{e.get('kind')}] {e.get('error')}{worker}"


@app.command
def retry(
    dlq_id: int,
    *,
    force: Force = False,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Put one dead letter back in the queue with fresh attempts.

    Parameters
    ----------
    force
        Retry even when it is past its attempts: retried from the DLQ before and failed again.
    """

    async def work(conn: Connection) -> int:
        candidates = await dlq.retry_candidates(conn, None, dlq_id)
        if not candidates:
            raise dlq.missing(dlq_id)
        if candidates[0][1] and not force:
            raise PgobsError(
                f"dead letter {dlq_id} was retried from the DLQ before and failed again: it is "
                "past its max attempts",
                "see why with pgobs dlq show, fix the cause, then retry with --force",
            )
        return await dlq.retry_dead(conn, [dlq_id])

    moved = with_connection(dsn, work)
    if wants_json(json, format):
        print_json({"retried": [dlq_id] if moved else []})
        return
    print(f"dead letter {dlq_id} is queued again")


@app.command(name="retry-all")
def retry_all(
    *,
    observer: Observer = None,
    dry_run: bool = False,
    force: Force = False,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Put every dead letter (of an observer) back in the queue.

    Parameters
    ----------
    dry_run
        Say how many and which would be retried; change nothing.
    force
        Also those past their attempts (retried from the DLQ before and failed again).
    """

    def progress(done: int, total: int) -> None:
        if total > dlq.RETRY_BATCH:
            print(f"  {done}/{total}", file=sys.stderr)

    async def work(conn: Connection) -> tuple[list[int], list[int], int]:
        candidates = await dlq.retry_candidates(conn, observer)
        ids = [i for i, past in candidates if force or not past]
        held = [i for i, past in candidates if past and not force]
        moved = 0 if dry_run else await dlq.retry_dead(conn, ids, progress)
        return ids, held, moved

    ids, held, moved = with_connection(dsn, work)
    if wants_json(json, format):
        print_json({"dry_run": dry_run, "retried": moved, "ids": ids, "held_back": held})
        return
    scope = f" of {observer}" if observer else ""
    if not ids and not held:
        print(f"no dead letters{scope}: nothing to retry")
        return
    if dry_run:
        shown = ", ".join(map(str, ids[:50])) + (" …" if len(ids) > 50 else "")
        print(
            f"dry run: would retry {len(ids)} dead letter(s){scope}" + (": " + shown if ids else "")
        )
    else:
        print(f"retried {moved} dead letter(s){scope}")
    if held:
        print(
            f"held back {len(held)} past their max attempts (retried before and failed again): "
            f"{', '.join(map(str, held[:20]))}{' …' if len(held) > 20 else ''}; --force retries "
            "them too"
        )


@app.command
def remove(
    dlq_id: int,
    *,
    force: Annotated[
        bool, Parameter(negative=(), help="Do not ask; required without a terminal.")
    ] = False,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Delete one dead letter for good (its event stays)."""

    async def work(conn: Connection) -> None:
        found = await dlq.show_dead(conn, dlq_id)  # NotFound first, before asking
        if not force:
            _confirm(found)
        await dlq.remove_dead(conn, dlq_id)

    with_connection(dsn, work)
    if wants_json(json, format):
        print_json({"removed": [dlq_id]})
        return
    print(f"dead letter {dlq_id} removed")


def _confirm(found: dict[str, Any]) -> None:
    what = f"dead letter {found['id']} ({found['observer']}, event {found['event_id']})"
    if not sys.stdin.isatty():
        raise PgobsError(f"removing {what} deletes it for good", "add --force to confirm")
    answer = input(f"remove {what} for good? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise PgobsError(f"kept {what}", "answer y, or pass --force")


@app.command
def stats(
    *,
    by_observer: bool = False,
    by_error: Annotated[bool, Parameter(help="Group by the last error's first line.")] = False,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Counts of dead letters: total, transient, permanent, oldest and newest."""
    if by_observer and by_error:
        raise BadOption("give --by-observer or --by-error, not both")
    rows = with_connection(dsn, lambda c: dlq.stats(c, by_observer, by_error))
    if wants_json(json, format):
        print_json(rows if by_observer or by_error else rows[0])
        return
    if (by_observer or by_error) and not rows:
        print("the dead-letter queue is empty")
    if by_error:
        for r in rows:
            print(f"{r['total']:>8}  [{r['error_kind']}] {r['error'] or '(no message)'}")
            print(f"{'':>8}  first {r['oldest']}, last {r['newest']}")
        return
    if by_observer:
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
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Delete dead letters older than an age."""
    age = dlq.parse_age(older_than)
    count = with_connection(dsn, lambda c: dlq.purge(c, age, observer, dry_run))
    if wants_json(json, format):
        print_json({"dry_run": dry_run, "deleted": 0 if dry_run else count, "matching": count})
        return
    print(
        "would delete" if dry_run else "deleted", f"{count} dead letter(s) older than {older_than}"
    )
