"""``pgobs circuits``: the fleet's circuit breakers, for operators."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from pgobs import jsoncodec
from pgobs.cli.session import Dsn, with_connection
from pgobs.errors import PgobsError

if TYPE_CHECKING:
    from pgobs.queue.circuit_store import CircuitStatus

app = App(
    name="circuits",
    help="Circuit breakers, one per target, shared by every worker: list them, close one by hand.",
)


@app.command(name="list")
def list_(*, json: bool = False, dsn: Dsn = None) -> None:
    """List every circuit: open ones first, then half-open, then closed."""
    from pgobs.queue.circuit_store import list_circuits

    rows = with_connection(dsn, list_circuits)
    if json:
        print(jsoncodec.encode_indented([r.as_json() for r in rows]))
        return
    if not rows:
        print("no circuits yet: workers create them as they call their targets")
        return
    print(f"{'STATE':<10} {'FAILED/CALLS':>12}  {'WINDOW':>7}  {'NEXT PROBE':<19}  TARGET")
    for r in rows:
        print(
            f"{r.state:<10} {f'{r.failures:.0f}/{r.requests:.0f}':>12}  {r.window_s:>6g}s  "
            f"{_when(r):<19}  {r.target}"
        )
        if r.state != "closed" and r.last_error:
            print(f"{'':<10} last error: {r.last_error.replace(chr(10), ' ')[:160]}")


def _when(r: CircuitStatus) -> str:
    at: datetime | None = r.next_at
    return f"{at.astimezone():%Y-%m-%d %H:%M:%S}" if at is not None else "-"


@app.command
def reset(
    target: Annotated[str, Parameter(help="The circuit, as pgobs circuits list shows it.")],
    *,
    dsn: Dsn = None,
) -> None:
    """Close TARGET's circuit now: its jobs run again at once, on every worker."""
    import psycopg

    from pgobs.queue.circuit_store import reset_circuit

    try:
        with_connection(dsn, lambda conn: reset_circuit(conn, target))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PgobsError(
            "this role may read pgobs.circuits but not change it",
            "run it as a role granted pgobs_worker, or as the schema's owner",
        ) from exc
    print(f"circuit {target} is closed: the workers run its waiting jobs now")
