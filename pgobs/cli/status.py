"""``pgobs status``: listeners, queue, dead letters and circuits at a glance; a probe for scripts
(exit 0 when healthy, 1 with the reasons on stderr when not)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Any

from cyclopts import Parameter

from pgobs.cli.health import Status, Thresholds, judge, read_status
from pgobs.cli.output import Format, JsonFlag, print_json, wants_json
from pgobs.cli.session import Dsn, with_connection
from pgobs.errors import EXIT_GENERAL, BadOption


def status(
    *,
    detailed: bool = False,
    json: JsonFlag = False,
    format: Format = "text",
    listener: Annotated[str | None, Parameter(help="Only this listener id.")] = None,
    max_lag: Annotated[
        float, Parameter(help="Unhealthy when a listener lags more seconds than this.")
    ] = 60.0,
    max_heartbeat_age: Annotated[
        float, Parameter(help="Unhealthy when a listener instance has not beaten for longer.")
    ] = 10.0,
    dsn: Dsn = None,
) -> int:
    """Health of the deployment: listeners (leader, heartbeat, lag, open transactions holding
    events back), jobs per observer, dead letters, open circuits, and what the trail's search
    sinks (Elasticsearch) have shipped and have waiting.

    Exits 0 when healthy; 1 when a listener id has no leader, lags over --max-lag or an instance's
    heartbeat is older than --max-heartbeat-age, with each reason on stderr.

    Parameters
    ----------
    detailed
        Also list standby and stopped listener instances and each open circuit's counters.
    """
    if not (max_lag >= 0 and max_heartbeat_age > 0):  # NaN too: it passes every comparison
        raise BadOption("--max-lag must be 0 or more and --max-heartbeat-age more than 0")
    found = with_connection(dsn, lambda conn: read_status(conn, listener))
    found.problems = judge(found, Thresholds(max_lag, max_heartbeat_age), listener)
    if wants_json(json, format):
        print_json(as_json(found))
    else:
        print_text(found, detailed)
    for problem in found.problems:
        print(f"pgobs: unhealthy: {problem}", file=sys.stderr)
    return EXIT_GENERAL if found.problems else 0


def as_json(found: Status) -> dict[str, Any]:
    return {
        "healthy": not found.problems,
        "problems": found.problems,
        "listeners": [
            {
                "listener_id": listener.listener_id,
                "leader": _instance(listener.leader) if listener.leader else None,
                "lag_events": listener.lag_events,
                "lag_seconds": round(listener.lag_seconds, 3),
                "lag_measured": listener.lag_measured,
                "instances": [_instance(i) for i in listener.instances],
            }
            for listener in found.listeners
        ],
        "open_event_writers": [dataclasses.asdict(w) for w in found.open_writers],
        "jobs": [dataclasses.asdict(j) for j in found.jobs],
        "dlq": found.dlq,
        "open_circuits": found.circuits,
        "search_sinks": None
        if found.sinks is None
        else [dataclasses.asdict(sink) for sink in found.sinks],
    }


def _instance(i: Any) -> dict[str, Any]:
    doc: dict[str, Any] = dataclasses.asdict(i)
    doc["started_at"] = i.started_at.isoformat()
    doc["heartbeat_age_s"] = round(i.heartbeat_age_s, 3)
    return doc


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def print_text(found: Status, detailed: bool) -> None:
    print("pgobs status: " + ("healthy" if not found.problems else "UNHEALTHY"))
    print("listeners")
    if not found.listeners:
        print("  none has run against this database")
    for listener in found.listeners:
        leader = listener.leader
        who = (
            f"leader {leader.host}:{leader.pid} {leader.state}, "
            f"heartbeat {_age(leader.heartbeat_age_s)} ago"
            if leader
            else "NO LEADER"
        )
        print(
            f"  {listener.listener_id}: {who}; lag {listener.lag_events} event(s), "
            f"{_age(listener.lag_seconds)}"
            + ("" if listener.lag_measured == "now" else f" ({listener.lag_measured})")
        )
        for i in listener.instances:
            if i is leader or (i.state == "stopped" and not detailed):
                continue
            print(
                f"    {'standby' if i.state != 'stopped' else 'stopped'} {i.host}:{i.pid} "
                f"{i.state}, heartbeat {_age(i.heartbeat_age_s)} ago"
                + (f", {i.events_processed} events fanned out" if detailed else "")
            )
    for w in found.open_writers:
        app = f", application {w.application!r}" if w.application else ""
        print(
            f"  holding events back: backend {w.pid} (transaction {w.xid}{app}), "
            f"open for {_age(w.open_s)}"
        )
    print("jobs per observer")
    if not found.jobs:
        print("  none queued")
    else:
        print(f"  {'OBSERVER':<32} {'READY':>8} {'RUNNING':>8} {'RETRYING':>9}  OLDEST")
    for j in found.jobs:
        print(
            f"  {j.observer[:32]:<32} {j.ready:>8} {j.running:>8} {j.retrying:>9}  "
            f"{_age(j.oldest_age_s)}"
        )
    print("dead letters per observer")
    if not found.dlq:
        print("  none")
    for d in found.dlq:
        print(
            f"  {d['observer'][:32]:<32} {d['total']:>8} ({d['transient']} transient, "
            f"{d['permanent']} permanent), oldest {str(d['oldest'])[:19].replace('T', ' ')}"
        )
    print("open circuits" + ("" if found.circuits else ": none"))
    for c in found.circuits:
        shown = {k: v for k, v in c.items() if k not in ("target", "state") and v is not None}
        extra = "".join(f", {k} {v}" for k, v in shown.items()) if detailed else ""
        print(f"  {c.get('target')}: {c.get('state')}{extra}")
    if found.sinks is None:
        print("search sinks: not readable by this role (pgobs.trail_shipping)")
        return
    print("search sinks" + ("" if found.sinks else ": none (the trail is searched in Postgres)"))
    for sink in found.sinks:
        waiting = (
            f"{sink.backlog} waiting, the oldest {_age(sink.oldest_age_s)}"
            if sink.backlog
            else "nothing waiting"
        )
        print(
            f"  {sink.sink}: {sink.shipped} shipped, {sink.rejected} rejected; {waiting}; "
            f"last shipped {_age(sink.last_shipped_age_s)} ago"
        )
