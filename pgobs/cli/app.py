"""``pgobs``: the command line. Every user error is one line on stderr and a non-zero exit.

Registering a command: one line below, naming the command's function (or its sub-``App``) by
import path, so its module, and whatever heavy library it uses, is imported only when that
command runs: ``pgobs --version`` and ``pgobs --help`` import none of them (a test checks it).
Give ``help=`` on the line: the top-level help shows it without importing the module (the
command's own ``--help`` page shows its docstring, see ``_own_help``). For a sub-``App``, give
its own help text: cyclopts puts the line's on the sub-App's page.

    app.command("pgobs.cli.<module>:<function or App>", name="<command>", help="<one line>")

Exit codes (pgobs.errors): 1 general, 2 configuration, 3 connection, 4 validation failed,
5 not found. A command raises a PgobsError subclass (or returns an int); main() does the rest.
"""

from __future__ import annotations

import logging
import sys

from cyclopts import App

from pgobs import __version__
from pgobs.errors import EXIT_GENERAL, PgobsError

app = App(
    name="pgobs",
    help="PostgreSQL-native observers: row changes become webhooks, emails, SQL calls and "
    "Python handlers, reliably.",
    version=__version__,
    help_format="plaintext",
    version_format="plaintext",
)

app.command("pgobs.cli.schema:migrate", help="Create or upgrade the pgobs schema.")
app.command("pgobs.cli.schema:track", help="Capture a table's row changes as events.")
app.command("pgobs.cli.schema:untrack", help="Stop capturing a table's changes.")
app.command("pgobs.cli.worker:worker", help="Run a listener candidate and/or action workers.")
app.command(
    "pgobs.cli.validate:validate_config", name="validate-config", help="Check an observers file."
)
app.command("pgobs.cli.demo:demo", help="The whole path on a database of its own.")
app.command(
    "pgobs.cli.dlq:app",
    name="dlq",
    help="The dead-letter queue: jobs out of attempts or failed for good.",
)
app.command("pgobs.cli.status:status", help="Health of listeners, queue, DLQ and circuits.")
app.command(
    "pgobs.cli.debug_event:debug_event",
    name="debug-event",
    help="Why an event did or did not reach each observer.",
)
app.command(
    "pgobs.cli.maintenance:app",
    name="maintenance",
    help="Retention: remove events every listener has fanned out, old audit rows, stopped "
    "listener rows and expired dedup and cache entries (pgobs.run_maintenance()).",
)
app.command(
    "pgobs.cli.circuits:app",
    name="circuits",
    help="Circuit breakers, one per target, shared by every worker: list them, close one by hand.",
)
app.command(
    "pgobs.cli.metrics:app",
    name="metrics",
    help="Current metric values: from a worker's --metrics-port (--url), else the fleet-wide "
    "ones computed from the database.",
)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request and pgserver every handle at INFO: noise for an operator.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    args = sys.argv[1:] if argv is None else argv
    try:
        _own_help(args)
        result = app(args, result_action="return_value")
    except PgobsError as exc:
        print(f"pgobs: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        refusal = _database_refusal(exc)
        if refusal is None:
            raise
        # Whatever the database refused that no command anticipated: still one line.
        print(f"pgobs: error: the database refused: {refusal}", file=sys.stderr)
        sys.exit(EXIT_GENERAL)
    sys.exit(result if isinstance(result, int) else 0)


def _own_help(args: list[str]) -> None:
    """cyclopts gives a lazily registered command its ``help=`` on its own help page too; a
    command function's page gets its whole docstring back, reflowed as markdown (plain text
    keeps the docstring's line breaks; markdown costs an import ``pgobs --help`` avoids). Only
    the command being run is imported, as it would be to run it."""
    if args and not args[0].startswith("-") and args[0] in set(app):
        app.help_format = "markdown"
        command = app[args[0]]
        function = command.default_command
        if function is None:
            return
        # A sub-App (pgobs metrics) keeps its own help; only a bare function's is restored.
        module = vars(sys.modules[function.__module__]).values()
        if not any(isinstance(v, App) and v.default_command is function for v in module):
            command.help = None


def _database_refusal(exc: Exception) -> str | None:
    """The first line of a psycopg error's reason; None for any other exception. psycopg is
    looked up, not imported: a command that never loaded it cannot have raised its errors."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return None
    reason = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
    return str(reason).splitlines()[0]


__all__ = ["app", "main"]
