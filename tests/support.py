"""Test servers and helpers: a real HTTP receiver, an SMTP server, pgobs as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail clearly on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def scalar(dsn: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


def fetch(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def execute(dsn: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on loopback that records requests and answers as it is told."""

    url: str
    requests: list[Request] = field(default_factory=list)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    default_status: int = 200
    delay_s: float = 0.0
    hold_until_in_flight: int = 0  # answer nothing until this many were in flight at once
    extra_headers: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def respond(self, path: str, *statuses: int) -> None:
        """Answer the next requests to ``path`` with these statuses, then ``default_status``."""
        self.statuses[path] = list(statuses)

    def record(self, req: Request) -> int:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()
            queue = self.statuses.get(req.path)
            return queue.pop(0) if queue else self.default_status

    def to(self, path: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 20.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests to {path}, got {len(got)}")
                self._cond.wait(left)


def start_receiver() -> tuple[Receiver, Callable[[], None]]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                time.monotonic(),
            )
            with receiver._cond:
                receiver.in_flight += 1
                receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                receiver._cond.notify_all()
                receiver._cond.wait_for(
                    lambda: receiver.max_in_flight >= receiver.hold_until_in_flight, timeout=10
                )
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status = receiver.record(req)
            with receiver._cond:
                receiver.in_flight -= 1
            payload = b'{"ok": true}'
            self.send_response(status)
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return receiver, stop


# -- pgobs as a process ---------------------------------------------------------------------------


def pgobs_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PGOBS_DSN": dsn, "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    return env


def run_pgobs(
    dsn: str | None,
    *args: str,
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = env or (pgobs_env(dsn) if dsn else {**os.environ})
    return subprocess.run(
        [sys.executable, "-m", "pgobs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        check=False,
    )


class Worker:
    """A ``pgobs worker`` subprocess, stopped for real (SIGTERM or SIGKILL)."""

    def __init__(self, dsn: str, *args: str, log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        defaults = [] if "--metrics-port" in args else ["--metrics-port", "0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgobs", "worker", *defaults, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or pgobs_env(dsn),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.terminate(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def workers(dsn: str, tmp: Path, count: int, *args: str) -> Iterator[list[Worker]]:
    started = [Worker(dsn, *args, log_path=tmp / f"worker-{i}.log") for i in range(count)]
    try:
        yield started
    finally:
        for w in started:
            w.stop()


# -- a neighbour deployment -----------------------------------------------------------------------

NEIGHBOUR_CONFIG = """\
observers:
  - name: neighbour
    entity: Order
    actions: [{type: database, function: public.deliver}]
"""

NEIGHBOUR_SCHEMA = (
    "CREATE TABLE orders (id bigserial PRIMARY KEY, note text)",
    "SELECT pgobs.track('orders', 'Order')",
    "CREATE TABLE delivered (order_id bigint PRIMARY KEY)",
    "CREATE FUNCTION deliver(event jsonb) RETURNS void LANGUAGE sql AS $$ "
    "INSERT INTO delivered VALUES ((event->>'entity_id')::bigint) ON CONFLICT DO NOTHING $$",
)

# The README's documented names: "pgobs listener <id> pid <pid>" is a listener's session.
LISTENER_SESSIONS = (
    "SELECT coalesce(array_agg(pid ORDER BY pid), '{}') "
    "FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE 'pgobs listener %'"
)
# The leader is the session holding the listener lock (class 2024061501); its application name
# carries the process id.
LEADER = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid AND a.datname = current_database()
WHERE l.locktype = 'advisory' AND l.classid = 2024061501 AND l.granted
"""
CANDIDATES = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE 'pgobs listener %'"
)
# The leader's second session, which reads the next batch while the leader writes this one.
READERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE 'pgobs reader %'"
)
KILL_READERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name LIKE 'pgobs reader %'"
)


def leader_pid(dsn: str) -> int | None:
    """The process id of the listener that leads in ``dsn``'s database, if one does."""
    match = re.search(r"pid (\d+)", scalar(dsn, LEADER) or "")
    return int(match.group(1)) if match else None


KILLED_SESSIONS = "SELECT sessions_killed FROM pg_stat_database WHERE datname = current_database()"


class Neighbour:
    """Another pgobs deployment on the suite's server, in a database of its own, as a real one
    shares a server with other databases. The suite must pass beside it and never touch it."""

    def __init__(self, dsn: str, folder: Path) -> None:
        self.dsn = dsn
        for statement in NEIGHBOUR_SCHEMA:
            execute(dsn, statement)
        config = folder / "observers.yaml"
        config.write_text(NEIGHBOUR_CONFIG)
        self.worker = Worker(
            dsn, "--config", str(config), "--concurrency", "2", log_path=folder / "neighbour.log"
        )
        self.sent = 0
        try:
            self.deliver_one()  # it leads and runs jobs: the state the end is compared with
            self.listener_sessions: list[int] = wait_until(lambda: scalar(dsn, LISTENER_SESSIONS))
            self.killed_sessions: int = scalar(dsn, KILLED_SESSIONS)
        except BaseException:
            self.worker.stop()
            raise

    def deliver_one(self) -> None:
        self.sent += 1
        execute(self.dsn, "INSERT INTO orders (note) VALUES ('neighbour')")
        wait_until(
            lambda: scalar(self.dsn, "SELECT count(*) FROM delivered") == self.sent, timeout=30
        )

    def disturbances(self) -> list[str]:
        """What happened to the neighbour since it started; empty when the suite left it alone."""
        if self.worker.proc.poll() is not None:
            return [f"its worker exited with code {self.worker.proc.returncode}"]
        found = []
        try:
            self.deliver_one()
        except AssertionError:
            found.append("an event inserted at the end was not delivered within 30 s")
        sessions = scalar(self.dsn, LISTENER_SESSIONS)
        if sessions != self.listener_sessions:
            found.append(
                f"its listener sessions changed from {self.listener_sessions} to {sessions}"
            )
        killed = scalar(self.dsn, KILLED_SESSIONS)
        if killed != self.killed_sessions:
            found.append(f"{killed - self.killed_sessions} of its sessions were terminated")
        if "lost its session" in self.worker.output():
            found.append("its listener lost its session")
        events = scalar(self.dsn, "SELECT count(*) FROM pgobs.events")
        dead = scalar(self.dsn, "SELECT count(*) FROM pgobs.dlq")
        if events != self.sent or dead:
            found.append(f"{events} events for its {self.sent} inserts, {dead} dead letters")
        return found
