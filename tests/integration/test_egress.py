"""The egress guard in a real worker: refused targets fail for good on the first attempt, a
literal address without a packet sent, a name on the address it actually connected to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import Worker, execute, fetch, pgobs_env, run_pgobs, scalar, wait_until


@pytest.fixture
def db(dsn: str) -> str:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    return dsn


class Counting(ThreadingHTTPServer):
    """Counts TCP connections and HTTP requests separately, and answers 204."""

    daemon_threads = True
    connections = 0
    requests = 0

    def get_request(self) -> Any:
        got = super().get_request()
        self.connections += 1
        return got


@pytest.fixture
def target() -> Iterator[Counting]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            server.requests += 1
            self.send_response(204)
            self.end_headers()

        do_POST = do_GET = do_CONNECT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = Counting(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_worker(db: str, tmp: Path, config: str, env: dict[str, str] | None = None) -> Worker:
    path = tmp / "observers.yaml"
    path.write_text(config)
    return Worker(db, "--config", str(path), log_path=tmp / "w.log", env=env)


def dead_letters(db: str) -> dict[str, tuple[int, str, str]]:
    rows = fetch(db, "SELECT observer, attempts, error_kind, last_error FROM pgobs.dlq")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_metadata_address_is_refused_without_traffic(
    db: str, target: Counting, tmp_path: Path
) -> None:
    # Safety net: were the guard broken, the request would go to this loopback proxy, never to
    # 169.254.169.254 itself; the proxy seeing nothing shows nothing left the worker.
    proxy = f"http://127.0.0.1:{target.server_address[1]}"
    env = pgobs_env(db, HTTP_PROXY=proxy, http_proxy=proxy, ALL_PROXY=proxy, all_proxy=proxy)
    env.update(NO_PROXY="", no_proxy="")
    config = """
observers:
  - name: obs-metadata
    entity: Order
    actions: [{type: webhook, url: "http://169.254.169.254/latest/meta-data/iam/"}]
    retry: {max_attempts: 5}
"""
    worker = run_worker(db, tmp_path, config, env)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 1, timeout=30)
    finally:
        worker.stop()
    attempts, kind, error = dead_letters(db)["obs-metadata"]
    assert (attempts, kind) == (1, "permanent")
    assert error == (
        "POST http://169.254.169.254/latest/meta-data/iam/ refused: 169.254.169.254 is a "
        "link-local or cloud metadata address, refused unless egress.allow lists it"
    )
    assert (target.connections, target.requests) == (0, 0)


def test_deny_rules_check_literal_addresses_and_resolved_names(
    db: str, target: Counting, tmp_path: Path
) -> None:
    port = target.server_address[1]
    config = f"""
egress:
  deny: [127.0.0.0/8, "::1/128"]
observers:
  - name: obs-literal
    entity: Order
    actions: [{{type: webhook, url: "http://127.0.0.1:{port}/literal"}}]
  - name: obs-name
    entity: Order
    actions: [{{type: webhook, url: "http://localhost:{port}/name"}}]
"""
    worker = run_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 2, timeout=30)
    finally:
        worker.stop()
    letters = dead_letters(db)
    assert letters["obs-literal"][:2] == (1, "permanent")
    assert letters["obs-literal"][2] == (
        f"POST http://127.0.0.1:{port}/literal refused: "
        "127.0.0.1 is in 127.0.0.0/8, which egress.deny refuses"
    )
    # "localhost" is only known after the lookup: refused on the address it connected to,
    # before TLS or a byte of the request.
    assert letters["obs-name"][:2] == (1, "permanent")
    assert letters["obs-name"][2].startswith(
        f"POST http://localhost:{port}/name refused: connected to "
    )
    assert "which egress.deny refuses" in letters["obs-name"][2]
    assert target.requests == 0
    assert target.connections <= 1  # the name's connection, closed unused; none for the literal


def test_a_narrower_allow_rule_overrides_a_deny(db: str, target: Counting, tmp_path: Path) -> None:
    port = target.server_address[1]
    config = f"""
egress:
  deny: [127.0.0.0/8]
  allow: [127.0.0.1/32]
observers:
  - name: obs-allowed
    entity: Order
    actions: [{{type: webhook, url: "http://127.0.0.1:{port}/ok"}}]
"""
    worker = run_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(lambda: target.requests == 1)
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0)
    finally:
        worker.stop()
    assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 0


def test_validate_config_warns_about_private_targets(tmp_path: Path) -> None:
    path = tmp_path / "observers.yaml"
    path.write_text(
        "observers:\n"
        "  - name: a\n"
        "    entity: Order\n"
        "    actions:\n"
        "      - {type: webhook, url: 'http://172.20.0.5/hook'}\n"
    )
    result = run_pgobs(None, "validate-config", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        f"{path}:5: warning: webhook url targets the private address 172.20.0.5: deliveries go "
        "inside the network (observers[0].actions[0].url) — if that is not intended, fix the "
        "URL or list the range in egress.deny"
    ) in result.stdout
