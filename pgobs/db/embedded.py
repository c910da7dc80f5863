"""An embedded Postgres (the pgserver wheel) for when no DSN is given.

One server per user, in the user's data directory; it keeps running after the process that
started it exits, so every pgobs process of that user shares it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pgobs.errors import ConnectionFailed


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgobs" / "pgdata"


def embedded_dsn() -> str:
    try:
        import pgserver
    except ImportError as exc:
        raise ConnectionFailed(
            "no database given and the embedded Postgres is not installed",
            "pass --dsn or set PGOBS_DSN, or install pgobs[embedded]",
        ) from exc
    pgdata = data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"pgobs: no --dsn, PGOBS_DSN or DATABASE_URL; using the embedded Postgres in {pgdata}",
        file=sys.stderr,
    )
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]  # untyped re-export
    except Exception as exc:
        raise ConnectionFailed(
            f"the embedded Postgres in {pgdata} did not start: {exc}",
            "see its log in that folder, or pass --dsn",
        ) from exc
    uri: str = server.get_uri()
    return uri


def stop_command() -> str:
    """The command that stops the embedded Postgres (pgserver's own pg_ctl, on its data folder)."""
    import pgserver

    pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    command = f"{pg_ctl} -D {data_dir()} stop"
    # Started by root, pgserver runs the server as its own user, and pg_ctl refuses root.
    return f"runuser -u pgserver -- {command}" if os.geteuid() == 0 else command
