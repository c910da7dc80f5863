"""The metrics port as an operator scrapes it: observer labels on action metrics, fleet-wide
gauges from the leader only, /healthz and /readyz; and ``pgobs metrics``."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.test_cli import free_port
from tests.support import Worker, execute, run_pgobs, scalar, wait_until

CONFIG = """\
observers:
  - name: shipped
    entity: Order
    actions: [{type: log}]
  - name: rejected
    entity: Order
    actions: [{type: python, handler: "handlers:reject"}]
"""


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:  # not serving yet
        return 0, str(exc.reason)


def scrape(port: int) -> str:
    """The port's metrics; "" while it does not serve them yet."""
    status, text = get(port, "/metrics")
    return text if status == 200 else ""


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` in a scrape, or None when there is none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def orders(dsn: str, tmp_path: Path, config: str = CONFIG) -> Path:
    execute(dsn, "CREATE TABLE orders (id serial PRIMARY KEY)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    path = tmp_path / "observers.yaml"
    path.write_text(config)
    return path


def test_action_metrics_carry_the_observer_and_the_leader_publishes_the_fleet(
    dsn: str, tmp_path: Path
) -> None:
    config = orders(dsn, tmp_path)
    port = free_port()
    worker = Worker(
        dsn, "--config", str(config), "--metrics-port", str(port), log_path=tmp_path / "w.log"
    )
    try:
        execute(dsn, "INSERT INTO orders SELECT FROM generate_series(1, 2)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.dlq") == 2, timeout=30)
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0, timeout=30)
        wait_until(lambda: value(scrape(port), "observer_dlq_items", observer="rejected") == 2)
        text = scrape(port)
        for name, labels, expected in (
            ("observer_actions_executed_total", {"observer": "shipped", "action_type": "log"}, 2),
            (
                "observer_actions_executed_total",
                {"observer": "rejected", "action_type": "python"},
                2,
            ),
            (
                "observer_actions_failed_total",
                {"observer": "rejected", "action_type": "python", "kind": "permanent"},
                2,
            ),
            (
                "observer_action_duration_seconds_count",
                {"observer": "shipped", "action_type": "log"},
                2,
            ),
            ("observer_events_matched_total", {"observer": "shipped"}, 2),
            ("observer_events_matched_total", {"observer": "rejected"}, 2),
            ("observer_dlq_items", {"observer": "shipped"}, 0),
            ("observer_dlq_items_total", {}, 2),
            ("observer_jobs", {"observer": "shipped", "state": "available"}, 0),
            ("observer_jobs", {"observer": "rejected", "state": "scheduled"}, 0),
        ):
            assert value(text, name, **labels) == expected, (name, labels)
        age = value(text, "observer_listener_heartbeat_age_seconds", listener_id="default")
        assert age is not None and 0 <= age < 30
        assert value(text, "observer_listener_leaders", listener_id="default") == 1
        assert get(port, "/healthz") == (200, "ok\n")
        assert wait_until(lambda: get(port, "/readyz") == (200, "ready\n"))

        # pgobs metrics reads the same values from the worker's port ...
        scraped = run_pgobs(
            dsn, "metrics", "--url", f"127.0.0.1:{port}", "--metric", "observer_dlq_items", "--json"
        )
        assert scraped.returncode == 0, scraped.stderr
        values = {s["labels"]["observer"]: s["value"] for s in json.loads(scraped.stdout)}
        assert values == {"shipped": 0, "rejected": 2}
        # ... and computes the fleet-wide ones from the database without one.
        computed = run_pgobs(dsn, "metrics", "--metric", "observer_dlq_items")
        assert computed.returncode == 0, computed.stderr
        assert computed.stdout == 'observer_dlq_items{observer="rejected"} 2\n'
        counted = run_pgobs(dsn, "metrics", "--metric", "observer_dlq_items_total")
        assert counted.stdout == "observer_dlq_items_total 2\n"
        lag = run_pgobs(dsn, "metrics", "--metric", "observer_listener_lag_seconds", "--json")
        assert [s["labels"] for s in json.loads(lag.stdout)] == [{"listener_id": "default"}]
    finally:
        worker.stop()


def test_only_the_leader_publishes_fleet_gauges_and_both_candidates_are_ready(
    dsn: str, tmp_path: Path
) -> None:
    config = orders(dsn, tmp_path)
    ports = [free_port(), free_port()]
    candidates = [
        Worker(
            dsn,
            "--config",
            str(config),
            "--role",
            "listener",
            "--metrics-port",
            str(port),
            log_path=tmp_path / f"w{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    try:
        execute(dsn, "INSERT INTO orders DEFAULT VALUES")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 2)

        def publishing() -> list[bool]:
            return [
                'observer_jobs{observer="shipped",state="available"} 1.0' in scrape(p)
                for p in ports
            ]

        wait_until(lambda: sorted(publishing()) == [False, True])
        for port in ports:  # leading or standing by: both ready
            assert wait_until(lambda port=port: get(port, "/readyz") == (200, "ready\n"))
        leader = publishing().index(True)
        # The standby serves no fleet gauges at all, not stale ones.
        assert "observer_dlq_items_total" not in scrape(ports[1 - leader])

        candidates[leader].kill()
        standby = ports[1 - leader]
        wait_until(
            lambda: (
                value(scrape(standby), "observer_jobs", observer="shipped", state="available") == 1
            ),
            timeout=30,
        )
    finally:
        for candidate in candidates:
            candidate.stop()


def test_readyz_says_not_ready_while_a_worker_drains(dsn: str, tmp_path: Path) -> None:
    config = orders(
        dsn,
        tmp_path,
        "observers:\n  - name: held\n    entity: Order\n"
        '    actions: [{type: python, handler: "handlers:gated"}]\n',
    )
    execute(dsn, "CREATE TABLE starts (event_id bigint, pid int)")
    execute(dsn, "CREATE TABLE gate ()")
    port = free_port()
    worker = Worker(
        dsn,
        "--config",
        str(config),
        "--metrics-port",
        str(port),
        "--grace-seconds",
        "60",
        log_path=tmp_path / "w.log",
    )
    try:
        execute(dsn, "INSERT INTO orders DEFAULT VALUES")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM starts") == 1, timeout=30)
        assert wait_until(lambda: get(port, "/readyz") == (200, "ready\n"))
        worker.proc.send_signal(signal.SIGTERM)
        _, body = wait_until(lambda: (r := get(port, "/readyz"))[0] == 503 and r)
        assert "process: stopping" in body
        assert get(port, "/healthz") == (200, "ok\n")  # alive while it drains
        execute(dsn, "INSERT INTO gate DEFAULT VALUES")
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.stop()


def test_metrics_errors_are_one_line(dsn: str) -> None:
    unknown = run_pgobs(dsn, "metrics", "--metric", "observer_dlq_item")
    assert unknown.returncode != 0
    assert unknown.stderr.splitlines() == [
        "pgobs: error: no metric named 'observer_dlq_item' among the fleet-wide metrics (give "
        "--url to read a worker's own) (did you mean observer_dlq_items, "
        "observer_dlq_items_total?)"
    ]
    # A known metric without samples (no dead letters) is no error: nothing to print.
    empty = run_pgobs(dsn, "metrics", "--metric", "observer_dlq_items")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")
    port = free_port()  # nothing listens there
    unreachable = run_pgobs(dsn, "metrics", "--url", f"http://127.0.0.1:{port}")
    assert unreachable.returncode != 0
    lines = unreachable.stderr.splitlines()
    assert len(lines) == 1, unreachable.stderr
    assert lines[0].startswith(f"pgobs: error: cannot read http://127.0.0.1:{port}/metrics: ")
    assert "Connection refused" in lines[0]
    bad = run_pgobs(dsn, "metrics", "--url", "ftp://example")
    assert bad.returncode == 2  # an invalid option
    assert bad.stderr.splitlines() == [
        "pgobs: error: --url 'ftp://example' is not an http(s) address (e.g. http://127.0.0.1:9464)"
    ]


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:abc", "http://127.0.0.1:99999", "http://a b"]
)
def test_a_malformed_url_is_one_line(dsn: str, url: str) -> None:
    result = run_pgobs(dsn, "metrics", "--url", url)
    assert result.returncode == 2  # an invalid option, as the README's exit codes say
    assert result.stderr.splitlines() == [
        f"pgobs: error: --url {url!r} is not an http(s) address (e.g. http://127.0.0.1:9464)"
    ]


def test_an_idle_connection_to_the_metrics_port_is_closed() -> None:
    """A client that connects and sends nothing (a port scanner, a slow-loris) must not hold a
    thread of the worker for ever: the server hangs up after its idle timeout."""
    import socket

    from pgobs.observability.server import IDLE_TIMEOUT_S, start_server

    port = start_server(0)
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.settimeout(IDLE_TIMEOUT_S + 30)
        assert idle.recv(1) == b""  # closed by the server, not timed out here
