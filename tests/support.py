"""Test servers and helpers: a real HTTP receiver, an SMTP server, pgobs as a subprocess."""

from __future__ import annotations

import json
import os
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
