"""``pgobs``: the command line. Every user error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import anyio
import psycopg
from cyclopts import App, Parameter

from pgobs import __version__
from pgobs.cli.dlq import app as dlq_app
from pgobs.cli.maintenance import app as maintenance_app
from pgobs.cli.metrics import app as metrics_app
from pgobs.cli.search import ElasticsearchUrl
from pgobs.cli.search import search as search_command
from pgobs.cli.session import Dsn, with_connection
from pgobs.config.loader import load_config, parse_config_file
from pgobs.db.connect import Connection, resolve_dsn
from pgobs.db.migrate import migrate as apply_migrations
from pgobs.db.sqlfiles import query
from pgobs.errors import PgobsError
from pgobs.listener.listener import ListenerSettings
from pgobs.observability.metrics import serve_metrics
from pgobs.queue.worker import WorkerSettings
from pgobs.supervisor import ProcessSettings, run_process

app = App(
    name="pgobs",
    help="PostgreSQL-native observers: row changes become webhooks, emails, SQL calls and "
    "Python handlers, reliably.",
    version=__version__,
)

app.command(dlq_app)
app.command(maintenance_app)
app.command(metrics_app)
app.command(search_command, name="search")


@app.command
def migrate(*, dsn: Dsn = None, dry_run: bool = False) -> None:
    """Create or upgrade the pgobs schema (safe to run from several processes at once).

    Parameters
    ----------
    dry_run
        Print the migrations that would be applied, change nothing.
    """
    plan = anyio.run(lambda: apply_migrations(resolve_dsn(dsn), dry_run=dry_run))
    if not plan.pending:
        print(f"schema is up to date (applied: {', '.join(plan.applied) or 'none'})")
        return
    verb = "would apply" if dry_run else "applied"
    print(f"{verb}: {', '.join(plan.pending)}")


@app.command
def track(
    table: str,
    *,
    entity: Annotated[
        str | None, Parameter(help="entity_type of the events (default: the table name).")
    ] = None,
    id_column: str | None = None,
    dsn: Dsn = None,
) -> None:
    """Capture TABLE's row changes and TRUNCATEs as events (installs the pgobs capture triggers).

    A partitioned table is tracked whole, its future partitions included.

    Parameters
    ----------
    table
        The table, optionally schema-qualified: public.orders.
    id_column
        Column whose value becomes entity_id, or several comma-separated (their values are
        joined by ','). Default: the primary key; a table without one needs this option.
    """
    params = {"table": table, "entity": entity, "id_column": id_column}
    with_connection(dsn, lambda conn: _change_tracking(conn, "track", table, params))
    print(f"tracking {table} as {entity or table.split('.')[-1]}")


@app.command
def untrack(table: str, *, dsn: Dsn = None) -> None:
    """Stop capturing TABLE's changes (removes the pgobs capture triggers; events stay).

    Parameters
    ----------
    table
        The table, optionally schema-qualified: public.orders.
    """
    with_connection(dsn, lambda conn: _change_tracking(conn, "untrack", table, {"table": table}))
    print(f"stopped tracking {table}")


async def _change_tracking(
    conn: Connection, verb: Literal["track", "untrack"], table: str, params: dict[str, str | None]
) -> None:
    """Run pgobs.track or pgobs.untrack; every refusal becomes one line with its fix."""
    try:
        await conn.execute(query(f"{verb}_table"), params)
    except psycopg.errors.UndefinedTable as exc:
        raise PgobsError(f"table {table!r} does not exist", "check the name") from exc
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
        raise  # the schema is missing: with_connection says to migrate
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = exc.diag.message_primary or str(exc).strip()
        raise PgobsError(
            f"cannot {verb} {table!r}: {reason}",
            f"run pgobs {verb} as the table's owner with EXECUTE on pgobs' functions, "
            "such as the role that ran pgobs migrate",
        ) from exc
    except psycopg.DatabaseError as exc:
        reason = exc.diag.message_primary or str(exc).strip()
        fix = exc.diag.message_hint or "give an existing table"
        raise PgobsError(f"cannot {verb} {table!r}: {reason}", fix) from exc


@app.command
def worker(
    *,
    config: Annotated[Path, Parameter(help="The observers file.")] = Path("observers.yaml"),
    concurrency: int = 32,
    role: Literal["listener", "worker", "all"] = "all",
    listener_id: str = "default",
    batch_size: int = 500,
    leader_stale_seconds: float = 3.0,
    metrics_port: Annotated[
        int, Parameter(help="Serve Prometheus /metrics on this port (e.g. 9464); 0: off.")
    ] = 0,
    metrics_host: str = "127.0.0.1",
    lease_seconds: float = 30.0,
    grace_seconds: float = 10.0,
    trail: bool = True,
    elasticsearch_url: ElasticsearchUrl = None,
    dsn: Dsn = None,
) -> None:
    """Run a worker process: a listener candidate and/or the action workers.

    Parameters
    ----------
    concurrency
        Most actions this process runs at once.
    role
        listener: fan events out only; worker: run jobs only; all: both.
    listener_id
        Listeners with the same id elect one leader; different ids shard the fan-out.
    batch_size
        Events the listener reads per transaction.
    leader_stale_seconds
        A standby ends the leader's session and takes over when the leader's fan-out loop has
        been silent this long (a frozen process keeps its session, and with it the lock).
    lease_seconds
        How long a claimed job stays reserved without a heartbeat; a dead worker's jobs come back
        after this.
    grace_seconds
        On SIGTERM, how long running actions may take to finish before they are handed back.
    trail
        Record every event and outcome in pgobs.trail for pgobs search (--no-trail: only
        fan-out errors and on_failure: log drops, which leave no other trace).
    elasticsearch_url
        Ship the trail to this Elasticsearch (one process of the fleet ships at a time).
    """
    if lease_seconds < 1:
        raise PgobsError(f"--lease-seconds must be at least 1, got {lease_seconds:g}")
    if grace_seconds < 0:
        raise PgobsError(f"--grace-seconds must not be negative, got {grace_seconds:g}")
    if not 0 <= metrics_port <= 65535:
        raise PgobsError(f"--metrics-port must be between 0 and 65535, got {metrics_port}")
    if concurrency < 1:
        raise PgobsError(f"--concurrency must be at least 1, got {concurrency}")
    if not 1 <= batch_size <= 100_000:
        raise PgobsError(f"--batch-size must be between 1 and 100000, got {batch_size}")
    if not 2 <= leader_stale_seconds <= 3600:
        raise PgobsError(
            f"--leader-stale-seconds must be between 2 and 3600, got {leader_stale_seconds:g}"
        )
    loaded = load_config(config, strict_env=True)
    resolved = resolve_dsn(dsn)
    if metrics_port:
        serve_metrics(metrics_port, metrics_host)
    settings = ProcessSettings(
        role=role,
        listener=ListenerSettings(
            listener_id=listener_id,
            batch_size=batch_size,
            leader_stale_s=leader_stale_seconds,
            trail=trail,
        ),
        worker=WorkerSettings(
            concurrency=concurrency, lease_s=lease_seconds, grace_s=grace_seconds, trail=trail
        ),
        elasticsearch_url=elasticsearch_url,
    )
    anyio.run(lambda: run_process(resolved, loaded, settings))


@app.command(name="validate-config")
def validate_config(
    file: Path = Path("observers.yaml"), *, detailed: bool = False, import_handlers: bool = False
) -> int:
    """Check an observers file; print every error with its line and a hint.

    Python handlers are found by reading their modules' source: checking runs none of your code.

    Parameters
    ----------
    detailed
        Also list each observer with its events, condition and actions.
    import_handlers
        Import the python handlers' modules (running them, as the worker does) for a full check.
    """
    config, issues = parse_config_file(file, strict_env=False, import_handlers=import_handlers)
    for issue in issues:
        print(issue, file=sys.stderr if issue.severity == "error" else sys.stdout)
    if config is None:
        errors = sum(1 for i in issues if i.severity == "error")
        print(f"{file}: {errors} error(s)", file=sys.stderr)
        return 1
    actions = sum(len(o.actions) for o in config.observers)
    print(f"{file}: ok — {len(config.observers)} observer(s), {actions} action(s)")
    if detailed:
        from pgobs.actions.handler_source import HandlerSource
        from pgobs.actions.specs import PythonSpec, action_type

        for obs in config.observers:
            events = ", ".join(sorted(obs.event_types)) if obs.event_types else "any event"
            kinds = ", ".join(action_type(a) for a in obs.actions)
            print(f"  {obs.name} (line {obs.line}): {obs.entity} on {events}")
            print(f"    condition: {obs.condition_source or '(always)'}")
            print(
                f"    actions:   {kinds}; retry {obs.retry.max_attempts}x "
                f"{obs.retry.backoff_strategy}; on_failure {obs.on_failure}"
            )
            for spec in obs.actions:
                if not isinstance(spec, PythonSpec):
                    continue
                found = spec.handler
                if isinstance(found, HandlerSource):
                    where = f"{found.file}:{found.line}" if found.line else found.file
                    how = "not settled from source" if found.doubt else found.binding
                    print(f"    handler {spec.handler_name}: {how} at {where}")
                else:
                    kind = "async" if spec.is_async else "sync"
                    print(f"    handler {spec.handler_name}: {kind}, imported")
    return 0


@app.command
def demo(*, dsn: Dsn = None) -> None:
    """Show the whole path on a database of its own (pgobs_demo): a tracked table, inserts,
    signed webhooks at a local receiver, a failing endpoint, the DLQ and a retry."""
    from pgobs.cli.demo import run_demo

    resolved = resolve_dsn(dsn)
    anyio.run(lambda: run_demo(resolved))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request and pgserver every handle at INFO: noise for an operator.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # The Elasticsearch transport logs each failed try with a traceback; pgobs says it once.
    logging.getLogger("elastic_transport").setLevel(logging.CRITICAL)
    try:
        result = app(sys.argv[1:] if argv is None else argv, result_action="return_value")
    except PgobsError as exc:
        print(f"pgobs: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except psycopg.Error as exc:
        # Whatever the database refused that no command anticipated: still one line.
        reason = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
        print(f"pgobs: error: the database refused: {reason.splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


__all__ = ["app", "main"]
