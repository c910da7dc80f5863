"""``pgobs debug-event``: one event, and for every observer whether it matched and why not;
or, with ``--history``, the latest events to pick one from."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cyclopts import Parameter

from pgobs.cli.diagnosis import Diagnosis, judge, read_diagnosis
from pgobs.cli.output import Format, JsonFlag, print_json, wants_json
from pgobs.cli.session import Dsn, with_connection
from pgobs.conditions.explain import render_value
from pgobs.config.loader import load_config
from pgobs.config.model import EVENT_TYPE_ALIASES, Config
from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.errors import BadOption

DEFAULT_CONFIG = Path("observers.yaml")


def debug_event(
    *,
    event_id: Annotated[int | None, Parameter(help="The event to explain.")] = None,
    config: Annotated[
        Path | None,
        Parameter(
            help="The observers file to judge the event with (default: observers.yaml, "
            "when it exists)."
        ),
    ] = None,
    detailed: bool = False,
    history: Annotated[
        int | None, Parameter(help="List the latest N events instead (ids to explain).")
    ] = None,
    entity_type: Annotated[str | None, Parameter(help="With --history: only this entity.")] = None,
    kind: Annotated[
        Literal["created", "updated", "deleted"] | None,
        Parameter(help="With --history: only this kind of change."),
    ] = None,
    json: JsonFlag = False,
    format: Format = "text",
    dsn: Dsn = None,
) -> None:
    """Explain one event: its envelope; for every observer whether it matched and, when not,
    why (entity, event type, or the condition with the value of each of its parts); the jobs it
    made with attempts, errors and next run; its dead letters; its trail.

    An unknown id exits 5.

    Parameters
    ----------
    detailed
        Also the event's data and old data, each job's error history, and the value of every
        part of a condition that matched.
    """
    as_json = wants_json(json, format)
    if history is not None:
        if event_id is not None:
            raise BadOption("give --event-id or --history, not both")
        if not 1 <= history <= 10_000:
            raise BadOption(f"--history must be between 1 and 10000, got {history}")
        _print_history(
            with_connection(dsn, lambda c: _recent(c, history, entity_type, kind)), as_json
        )
        return
    if event_id is None:
        raise BadOption("give --event-id N (or --history N to list events)")
    if entity_type is not None or kind is not None:
        raise BadOption("--entity-type and --kind filter --history; with --event-id drop them")
    observers = _load(config)
    found = with_connection(dsn, lambda c: read_diagnosis(c, event_id))
    if observers is not None:
        found.verdicts = judge(observers, found.event)
    if as_json:
        print_json(_as_json(found, observers))
    else:
        _print_text(found, observers, detailed)


def _load(path: Path | None) -> Config | None:
    """The config to judge with; None when none was given and observers.yaml is absent."""
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return None
        path = DEFAULT_CONFIG
    return load_config(path, strict_env=False, import_handlers=False)


async def _recent(
    conn: Connection, limit: int, entity_type: str | None, kind: str | None
) -> list[dict[str, Any]]:
    params = {
        "limit": limit,
        "entity_type": entity_type,
        "event_type": EVENT_TYPE_ALIASES[kind] if kind else None,
    }
    cur = await conn.execute(query("recent_events"), params)
    keys = ("id", "created_at", "entity_type", "entity_id", "event_type")
    return [dict(zip(keys, row, strict=True)) for row in await cur.fetchall()]


def _print_history(events: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json([{**e, "created_at": e["created_at"].isoformat()} for e in events])
        return
    if not events:
        print("no events")
        return
    print(f"{'ID':>10}  {'CREATED AT':<19}  {'ENTITY':<24} {'ENTITY ID':<20} EVENT TYPE")
    for e in events:
        print(
            f"{e['id']:>10}  {e['created_at']:%Y-%m-%d %H:%M:%S}  {e['entity_type'][:24]:<24} "
            f"{(e['entity_id'] or '')[:20]:<20} {e['event_type']}"
        )


def _as_json(found: Diagnosis, observers: Config | None) -> dict[str, Any]:
    return {
        "event": {**found.event.envelope(), "txid": found.event.txid},
        "fanned_out": found.fanned_out,
        "config": observers.source if observers else None,
        "observers": [v.as_json() for v in found.verdicts] if observers else None,
        "jobs": found.jobs,
        "dlq": found.dead_letters,
        "audit": found.audit,
        "trail": found.trail,
    }


def _print_text(found: Diagnosis, observers: Config | None, detailed: bool) -> None:
    e = found.event
    created = f"{e.created_at:%Y-%m-%d %H:%M:%S%z}" if isinstance(e.created_at, datetime) else ""
    print(f"event {e.id}: {e.entity_type} {e.entity_id or ''} {e.event_type} at {created}")
    extra = [f"{k} {v}" for k, v in (("tenant", e.tenant), ("actor", e.actor)) if v]
    if e.changed_fields:
        extra.append("changed " + ", ".join(e.changed_fields))
    if extra:
        print("  " + "; ".join(extra))
    if detailed:
        print(f"  data:     {render_value(e.data)}")
        if e.old_data is not None:
            print(f"  old data: {render_value(e.old_data)}")
    if not found.fanned_out:
        print("  no listener has a checkpoint yet: not fanned out")
    for listener_id, done in found.fanned_out.items():
        print(f"  listener {listener_id}: " + ("fanned out" if done else "not fanned out yet"))
    _print_verdicts(found, observers, detailed)
    _print_jobs(found, detailed)
    if found.audit:
        print("audit")
        for a in found.audit:
            who = " ".join(filter(None, [a["observer"], a["action_type"]]))
            print(f"  {a['at']}  {a['kind']} {a['status']} {who}: {a['message'] or ''}")
    if found.trail is not None:
        print("trail" + ("" if found.trail else ": nothing recorded"))
        for t in found.trail:
            print("  " + ", ".join(f"{k} {render_value(v)}" for k, v in t.items() if v is not None))


def _print_verdicts(found: Diagnosis, observers: Config | None, detailed: bool) -> None:
    if observers is None:
        print("observers: not judged (no observers.yaml here; pass --config PATH)")
        return
    print(f"observers ({observers.source})")
    if not found.verdicts:
        print("  none configured")
    for v in found.verdicts:
        print(f"  {v.observer}: " + ("matched" if v.matched else f"no match — {v.reason}"))
        if v.condition is not None and (detailed or not v.matched):
            for line in v.condition.lines("      "):
                print(line)


def _print_jobs(found: Diagnosis, detailed: bool) -> None:
    print("jobs" + ("" if found.jobs else ": none pending (done, dead-lettered or never made)"))
    for j in found.jobs:
        print(
            f"  job {j['id']} {j['observer']}/{j['action']} ({j['action_type']}): {j['state']}, "
            f"attempt {j['attempts']} of {j['max_attempts']}, next run {j['run_at']}"
        )
        if j["last_error"]:
            print(f"    last error: {j['last_error']}")
        if detailed:
            for err in j["errors"]:
                print(f"    - {_error_line(err)}")
    print("dead letters" + ("" if found.dead_letters else ": none"))
    for d in found.dead_letters:
        print(
            f"  dead letter {d['id']} {d['observer']}/{d['action']} ({d['action_type']}): "
            f"{d['attempts']} attempts, {d['error_kind']}, failed at {d['failed_at']}"
        )
        for err in d["errors"] if detailed else d["errors"][-1:]:
            print(f"    - {_error_line(err)}")


def _error_line(err: Any) -> str:
    if not isinstance(err, dict):
        return str(err)
    if "retried_from_dlq" in err:
        return f"{err.get('at')}: retried from dead letter {err['retried_from_dlq']}"
    return f"{err.get('at')}: attempt {err.get('attempt')} [{err.get('kind')}] {err.get('error')}"
