"""Endpoints that work against the worker: receivers that echo credentials back, bodies of
hundreds of megabytes, closed ports, SMTP servers that refuse the login. Nothing secret may
reach the database or the log, and nothing a server sends may grow the worker's memory."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.support import Worker, execute, fetch, pgobs_env, scalar, wait_until


@pytest.fixture
def db(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


def serve(answer: Callable[[BaseHTTPRequestHandler, bytes], None]) -> Iterator[str]:
    """A real HTTP server on loopback; ``answer`` writes the response to each request."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            answer(self, self.rfile.read(length) if length else b"")

        do_POST = do_PUT = do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def echo_500(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Like httpbin: the request line, every header and the body, back in a 500's body."""
    payload = json.dumps(
        {
            "request": handler.requestline,
            "headers": dict(handler.headers.items()),
            "body": body.decode(errors="replace"),
        }
    ).encode()
    handler.send_response(500)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@pytest.fixture
def echo() -> Iterator[str]:
    yield from serve(echo_500)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class RefuseLogin:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture
def smtp_refusing_login() -> Iterator[int]:
    port = closed_port()
    controller = Controller(
        RefuseLogin(),
        hostname="127.0.0.1",
        port=port,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


SECRETS = {
    "URL_USER": "urluser-5b1e",
    "URL_PASSWORD": "urlpass-9c2d",
    "QUERY_KEY": "querykey-41aa",
    "HEADER_INLINE": "hdrinline-77f0",
    "HEADER_ENV": "hdrenv-0d3c",
    "SIGNING_INLINE": "signinline-e5a2",
    "SIGNING_ENV": "signenv-3f9b",
    "SLACK_INLINE": "slackinline-8d41",
    "SLACK_ENV": "slackenv-c07e",
    "URL_ENV_PASSWORD": "urlenvpass-62b9",
    "URL_ENV_QUERY": "urlenvquery-1e55",
    "SMTP_USER": "smtpuser-a9d3",
    "SMTP_PASSWORD": "smtppass-4c8f",
}


def leaky_actions(echo: str, closed: int, smtp_port: int) -> str:
    """Every place an action config holds a secret, each delivery failing a different way."""
    host_port = echo.removeprefix("http://")
    s = SECRETS
    return f"""
      - type: webhook
        url: "http://{s["URL_USER"]}:{s["URL_PASSWORD"]}@{host_port}/hooks/orders?api_key={s["QUERY_KEY"]}"
        headers: {{X-Api-Key: "{s["HEADER_INLINE"]}"}}
        signing_secret: "{s["SIGNING_INLINE"]}"
      - type: webhook
        url_env: HOOK_URL
        signing_secret_env: SIGNING_SECRET
      - type: webhook
        url: "{echo}/bearer"
        headers: {{Authorization: "Bearer ${{HEADER_TOKEN}}"}}
      - type: slack
        webhook_url: "{echo}/services/T000/B000/{s["SLACK_INLINE"]}"
        message_template: "order {{{{ data.id }}}}"
      - type: slack
        webhook_url_env: SLACK_URL
        message_template: "order {{{{ data.id }}}}"
      - type: email
        host: 127.0.0.1
        port: {smtp_port}
        from: shop@example.com
        to: [ops@example.com]
        body_template: "order {{{{ data.id }}}}"
        username_env: SMTP_USER
        password_env: SMTP_PASSWORD
      - type: email
        host: 127.0.0.1
        port: {closed}
        from: shop@example.com
        to: [ops@example.com]
        body_template: "order {{{{ data.id }}}}"
        username_env: SMTP_USER
        password_env: SMTP_PASSWORD"""


def test_no_secret_reaches_jobs_dlq_audit_or_the_log(
    db: str, echo: str, smtp_refusing_login: int, tmp_path: Path
) -> None:
    closed = closed_port()
    s = SECRETS
    env = pgobs_env(
        db,
        HEADER_TOKEN=s["HEADER_ENV"],
        SIGNING_SECRET=s["SIGNING_ENV"],
        HOOK_URL=f"http://u:{s['URL_ENV_PASSWORD']}@127.0.0.1:{closed}/in?token={s['URL_ENV_QUERY']}",
        SLACK_URL=f"http://127.0.0.1:{closed}/services/T1/B1/{s['SLACK_ENV']}",
        SMTP_USER=s["SMTP_USER"],
        SMTP_PASSWORD=s["SMTP_PASSWORD"],
    )
    actions = leaky_actions(echo, closed, smtp_refusing_login)
    config = f"""
observers:
  - name: obs-dlq
    entity: Order
    retry: {{max_attempts: 1}}
    actions: {actions}
  - name: obs-retrying
    entity: Order
    retry: {{max_attempts: 5, initial_delay_ms: 600000, max_delay_ms: 600000}}
    actions: {actions}
  - name: obs-audit
    entity: Order
    retry: {{max_attempts: 1}}
    on_failure: log
    actions: {actions}
"""
    path = tmp_path / "observers.yaml"
    path.write_text(config)
    worker = Worker(db, "--config", str(path), log_path=tmp_path / "w.log", env=env)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(
            lambda: (
                # obs-retrying's refused SMTP login (535) is permanent: 7 + 1 dead letters.
                scalar(db, "SELECT count(*) FROM pgobs.dlq") == 8
                and scalar(db, "SELECT count(*) FROM pgobs.audit WHERE kind = 'action'") == 7
                and scalar(db, "SELECT count(*) FROM pgobs.jobs WHERE last_error IS NOT NULL") == 6
            ),
            timeout=40,
        )
    finally:
        worker.stop()
    stored = "\n".join(
        row[0]
        for table in ("jobs", "dlq", "audit", "trail")
        for row in fetch(db, f"SELECT t::text FROM pgobs.{table} t")
    )
    logged = worker.output()
    found = {name for name, secret in s.items() if secret in stored or secret in logged}
    assert found == set(), f"secrets leaked: {sorted(found)}"
    # The errors still say what went wrong and where.
    errors = dict(
        fetch(db, "SELECT action_index, last_error FROM pgobs.dlq WHERE observer = 'obs-dlq'")
    )
    assert errors[0].startswith(f"POST {echo}/hooks/orders answered 500: ")
    assert '"X-Api-Key": "***"' in errors[0]
    assert f"POST http://127.0.0.1:{closed}/in failed: ConnectError" in errors[1]
    assert '"Authorization": "***"' in errors[2]
    assert errors[3].startswith(f"POST {echo} answered 500")  # Slack: the URL is the secret
    assert errors[4].startswith(f"POST http://127.0.0.1:{closed} failed: ConnectError")
    assert "answered 535" in errors[5]
    assert f"SMTP 127.0.0.1:{closed} failed" in errors[6]


HUGE = 200 * 1024 * 1024


def test_a_huge_error_body_is_cut_off_not_read(db: str, tmp_path: Path) -> None:
    sent: list[int] = []

    def huge_500(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        handler.send_response(500)
        handler.send_header("content-type", "text/plain")
        handler.send_header("content-length", str(HUGE))
        handler.end_headers()
        chunk = b"overloaded " * 6000
        written = 0
        try:
            while written < HUGE:
                handler.wfile.write(chunk)
                written += len(chunk)
        except OSError:
            pass  # the worker hung up: what it wanted is read
        sent.append(written)

    servers = serve(huge_500)
    url = next(servers)
    config = f"""
observers:
  - name: obs-huge
    entity: Order
    retry: {{max_attempts: 1}}
    actions:
      - {{type: webhook, url: "{url}/a"}}
      - {{type: webhook, url: "{url}/b"}}
"""
    path = tmp_path / "observers.yaml"
    path.write_text(config)
    worker = Worker(db, "--config", str(path), log_path=tmp_path / "w.log")
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 2, timeout=30)
        peak_kb = peak_rss_kb(worker.pid)
    finally:
        worker.stop()
        next(servers, None)
    errors = [r[0] for r in fetch(db, "SELECT last_error FROM pgobs.dlq")]
    assert all(e.startswith(f"POST {url}/") and "answered 500: overloaded" in e for e in errors)
    assert all(len(e) < 500 for e in errors)
    # The bar: two 1.5 GB bodies took a worker to 8.57 GB. A worker idles near 100 MB;
    # 300 MB leaves room for a loaded machine and is still far below one body.
    assert peak_kb < 300 * 1024, f"worker peaked at {peak_kb // 1024} MB"
    wait_until(lambda: len(sent) == 2)
    assert max(sent) < HUGE // 4  # the rest was never sent: the connection was closed


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM), so a short spike is not missed by sampling."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")
