"""Jobs to side effects, end to end: real worker processes, a real HTTP receiver, aiosmtpd,
SQL functions and Python handlers; retries, the DLQ, crashes and concurrency."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support import (
    Receiver,
    Worker,
    execute,
    fetch,
    run_pgobs,
    scalar,
    start_receiver,
    wait_until,
)

SECRET = "whsec_" + base64.b64encode(b"test-secret").decode()


@pytest.fixture
def db(dsn: str) -> str:
    execute(
        dsn,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, status text, total numeric, email text)",
    )
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE TABLE handled (event_id bigint, how text)")
    execute(dsn, "CREATE TABLE starts (event_id bigint, pid int)")
    return dsn


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def start_worker(dsn: str, tmp: Path, config: str, *args: str, name: str = "w") -> Worker:
    path = tmp / f"{name}.yaml"
    path.write_text(config)
    return Worker(dsn, "--config", str(path), *args, log_path=tmp / f"{name}.log")


def verify_signature(request: Any) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    expected = base64.b64encode(hmac.new(key, signed + request.body, hashlib.sha256).digest())
    return hmac.compare_digest(request.headers["webhook-signature"], "v1," + expected.decode())


def test_end_to_end_webhook_email_sql_and_python(
    db: str, receiver: Receiver, smtp: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, smtp_port = smtp
    execute(db, "CREATE TABLE shipped (order_id text, total numeric)")
    execute(
        db,
        "CREATE FUNCTION public.ship(event jsonb) RETURNS void LANGUAGE sql AS $$ "
        "INSERT INTO shipped VALUES (event->>'entity_id', (event->'data'->>'total')::numeric) $$",
    )
    config = f"""
observers:
  - name: obs-paid
    entity: Order
    event_type: created
    condition: "status == 'paid' && total > 100"
    actions:
      - type: webhook
        url: {receiver.url}/hooks/orders
        signing_secret: {SECRET}
        headers: {{X-Source: pgobs-test}}
      - type: email
        host: 127.0.0.1
        port: {smtp_port}
        from: shop@example.com
        to_template: "{{{{ data.email }}}}"
        subject_template: "Order {{{{ data.id }}}} paid"
        body_template: "Total: {{{{ data.total }}}}"
      - type: database
        function: public.ship
      - type: python
        handler: handlers:record
      - type: python
        handler: handlers:record_sync
"""
    worker = start_worker(db, tmp_path, config)
    try:
        execute(
            db,
            "INSERT INTO orders (status, total, email) VALUES "
            "('paid', 150, 'a@example.com'), ('new', 900, 'b@example.com'), "
            "('paid', 500, 'c@example.com')",
        )
        hooks = receiver.wait_for(2, "/hooks/orders")
        wait_until(
            lambda: (
                len(box.messages) == 2
                and scalar(db, "SELECT count(*) FROM handled") == 4
                and scalar(db, "SELECT count(*) FROM shipped") == 2
            )
        )
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0)
    finally:
        worker.stop()
    assert all(verify_signature(h) for h in hooks)
    assert {h.headers["x-source"] for h in hooks} == {"pgobs-test"}
    assert len({h.headers["webhook-id"] for h in hooks}) == 2
    body = hooks[0].json()
    assert body["observer"] == "obs-paid"
    assert body["entity_type"] == "Order" and body["event_type"] == "INSERT"
    assert {h.json()["data"]["total"] for h in hooks} == {150, 500}
    assert sorted(m.rcpt_tos[0] for m in box.messages) == ["a@example.com", "c@example.com"]
    subjects = sorted(message_from_bytes(m.content)["Subject"] for m in box.messages)
    assert subjects == ["Order 1 paid", "Order 3 paid"]
    assert sorted(r[0] for r in fetch(db, "SELECT how FROM handled")) == [
        "async",
        "async",
        "sync",
        "sync",
    ]
    assert sorted(r[0] for r in fetch(db, "SELECT total FROM shipped")) == [150, 500]
    assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 0


def test_retries_dead_letters_and_retry_all(db: str, receiver: Receiver, tmp_path: Path) -> None:
    receiver.respond("/fail", 500, 500, 500)
    receiver.respond("/bad", 400)
    config = f"""
observers:
  - name: obs-webhook
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/fail"}}]
    retry: {{max_attempts: 3, initial_delay_ms: 200, backoff_strategy: exponential, jitter: false}}
  - name: obs-bad
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/bad"}}]
    retry: {{max_attempts: 5, initial_delay_ms: 50}}
  - name: obs-reject
    entity: Order
    actions: [{{type: python, handler: "handlers:reject"}}]
"""
    worker = start_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 3)
        tries = receiver.to("/fail")
        assert len(tries) == 3
        assert len(receiver.to("/bad")) == 1  # a 400 is permanent: one try
        gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 200 ms, then doubled
        assert len({t.headers["webhook-id"] for t in tries}) == 1  # stable across retries

        dead = {
            r[0]: r[1:]
            for r in fetch(
                db,
                "SELECT observer, attempts, error_kind, jsonb_array_length(errors), last_error "
                "FROM pgobs.dlq",
            )
        }
        assert dead["obs-webhook"][:3] == (3, "transient", 3)
        assert "answered 500" in dead["obs-webhook"][3]
        assert dead["obs-bad"][:3] == (1, "permanent", 1)
        assert dead["obs-reject"][:2] == (1, "permanent")
        assert "can never be shipped" in dead["obs-reject"][3]

        listed = json.loads(run_pgobs(db, "dlq", "list", "--json").stdout)
        assert {d["observer"] for d in listed} == {"obs-webhook", "obs-bad", "obs-reject"}
        shown = json.loads(run_pgobs(db, "dlq", "show", str(listed[0]["id"]), "--json").stdout)
        assert shown["event"]["data"]["status"] == "paid"
        stats = json.loads(run_pgobs(db, "dlq", "stats", "--by-observer", "--json").stdout)
        assert {s["observer"]: s["total"] for s in stats} == {
            "obs-webhook": 1,
            "obs-bad": 1,
            "obs-reject": 1,
        }

        dry = run_pgobs(db, "dlq", "retry-all", "--observer", "obs-webhook", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would retry 1 dead letter(s) of obs-webhook" in dry.stdout
        assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 3
        assert scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0

        real = run_pgobs(db, "dlq", "retry-all", "--observer", "obs-webhook")
        assert "retried 1 dead letter(s)" in real.stdout
        receiver.wait_for(4, "/fail")  # the endpoint recovered: the 4th request succeeds
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0)
        assert scalar(db, "SELECT count(*) FROM pgobs.dlq WHERE observer = 'obs-webhook'") == 0
        assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 2
        assert receiver.to("/fail")[-1].headers["webhook-id"] == tries[0].headers["webhook-id"]

        purge = run_pgobs(db, "dlq", "purge", "--older-than", "1d", "--dry-run")
        assert "would delete 0 dead letter(s)" in purge.stdout
        bad_age = run_pgobs(db, "dlq", "purge", "--older-than", "soon")
        assert bad_age.returncode == 2  # a bad option
        assert "cannot read the age 'soon'" in bad_age.stderr
        unknown = run_pgobs(db, "dlq", "show", "99999")
        assert unknown.returncode == 5  # not found
        assert "no dead letter with id 99999" in unknown.stderr
    finally:
        worker.stop()


def test_sigkill_mid_action_the_job_runs_again(db: str, tmp_path: Path) -> None:
    config = """
observers:
  - name: obs-slow
    entity: Order
    actions: [{type: python, handler: "handlers:slow"}]
"""
    first = start_worker(db, tmp_path, config, "--lease-seconds", "2", name="first")
    second = None
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('x')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM starts") == 1)
        first.kill()
        assert scalar(db, "SELECT count(*) FROM handled") == 0
        second = start_worker(db, tmp_path, config, "--lease-seconds", "2", name="second")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM handled") == 1, timeout=20)
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0)
    finally:
        if second:
            second.stop()
        first.stop()
    pids = [r[0] for r in fetch(db, "SELECT pid FROM starts ORDER BY pid")]
    assert len(pids) == 2 and second is not None and second.pid in pids and first.pid in pids
    assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 0


def test_never_more_than_concurrency_actions_at_once(
    db: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.delay_s = 0.2
    receiver.hold_until_in_flight = 3  # so reaching the limit does not depend on timing
    config = f"""
observers:
  - name: obs-webhook
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/slow"}}]
"""
    worker = start_worker(db, tmp_path, config, "--concurrency", "3")
    try:
        execute(db, "INSERT INTO orders (status) SELECT 'x' FROM generate_series(1, 12)")
        receiver.wait_for(12, "/slow")
    finally:
        worker.stop()
    assert receiver.max_in_flight == 3


def test_actions_of_one_event_run_concurrently(db: str, receiver: Receiver, tmp_path: Path) -> None:
    receiver.hold_until_in_flight = 3  # a serial run would hold the first one for good
    hooks = ", ".join(
        f'{{type: webhook, name: hook-{i}, url: "{receiver.url}/slow"}}' for i in range(3)
    )
    config = f"""
observers:
  - name: obs-three
    entity: Order
    actions: [{hooks}]
"""
    worker = start_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('x')")
        arrived = receiver.wait_for(3, "/slow")
    finally:
        worker.stop()
    assert len(arrived) == 3
    assert receiver.max_in_flight == 3  # all three started before the first one finished


def test_sigterm_finishes_running_actions_and_hands_back_the_rest(db: str, tmp_path: Path) -> None:
    config = """
observers:
  - name: obs-slow
    entity: Order
    actions: [{type: python, handler: "handlers:slow"}]
"""
    first = start_worker(db, tmp_path, config, "--concurrency", "2", name="first")
    try:
        execute(db, "INSERT INTO orders (status) SELECT 'x' FROM generate_series(1, 6)")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM starts") == 2)
        assert first.terminate(timeout=20) == 0
        assert scalar(db, "SELECT count(*) FROM handled") == 2  # running ones finished
        assert scalar(db, "SELECT count(*) FROM pgobs.jobs") == 4
        assert scalar(db, "SELECT count(*) FROM pgobs.jobs WHERE locked_by IS NOT NULL") == 0
        assert scalar(db, "SELECT max(attempts) FROM pgobs.jobs") == 0
    finally:
        first.stop()
    second = start_worker(db, tmp_path, config, "--concurrency", "8", name="second")
    try:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM handled") == 6)
    finally:
        second.stop()
    assert scalar(db, "SELECT count(*) FROM starts") == 6  # nothing ran twice


def test_an_action_past_its_timeout_is_cancelled_and_retried(db: str, tmp_path: Path) -> None:
    config = """
observers:
  - name: obs-hang
    entity: Order
    actions: [{type: python, handler: "handlers:hang", timeout_ms: 200}]
    retry: {max_attempts: 2, initial_delay_ms: 10}
  - name: obs-fine
    entity: Order
    actions: [{type: python, handler: "handlers:record"}]
"""
    worker = start_worker(db, tmp_path, config, "--concurrency", "1")
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('x')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 1)
        wait_until(lambda: scalar(db, "SELECT count(*) FROM handled") == 1)
    finally:
        worker.stop()
    attempts, error = fetch(db, "SELECT attempts, last_error FROM pgobs.dlq")[0]
    assert attempts == 2
    assert error == "python action timed out after 200 ms"


def test_slack_cache_log_body_template_and_on_failure_log(
    db: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.respond("/gone", 404)
    execute(
        db,
        "INSERT INTO pgobs.cache (key, value, expires_at) VALUES "
        "('order:1', '{}', now() + interval '1 hour'), "
        "('order:2', '{}', now() + interval '1 hour')",
    )
    config = f"""
observers:
  - name: obs-notify
    entity: Order
    event_type: INSERT
    actions:
      - type: slack
        webhook_url: {receiver.url}/slack
        message_template: "Order {{{{ data.id }}}} is {{{{ data.status }}}}"
        channel: "#orders"
      - type: webhook
        url: {receiver.url}/custom
        body_template:
          order: "{{{{ data.id }}}}"
          source: pgobs
          nested: ["{{{{ event_type }}}}"]
      - type: cache
        keys: ["order:{{{{ data.id }}}}"]
      - type: log
        message_template: "order {{{{ data.id }}}} seen"
  - name: obs-drop
    entity: Order
    on_failure: log
    actions: [{{type: webhook, url: "{receiver.url}/gone"}}]
"""
    worker = start_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('paid')")
        slack = receiver.wait_for(1, "/slack")[0]
        custom = receiver.wait_for(1, "/custom")[0]
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.jobs") == 0)
    finally:
        worker.stop()
    assert slack.json() == {"text": "Order 1 is paid", "channel": "#orders"}
    assert custom.json() == {"order": 1, "source": "pgobs", "nested": ["INSERT"]}
    assert [r[0] for r in fetch(db, "SELECT key FROM pgobs.cache")] == ["order:2"]
    assert "order 1 seen" in worker.output()
    assert scalar(db, "SELECT count(*) FROM pgobs.dlq") == 0  # on_failure: log drops it...
    status, message = fetch(
        db,
        "SELECT status, message FROM pgobs.trail WHERE observer = 'obs-drop' AND kind = 'action'",
    )[0]
    assert status == "dropped" and "answered 404" in message  # ...into the trail


def test_429_honours_retry_after(db: str, receiver: Receiver, tmp_path: Path) -> None:
    receiver.respond("/busy", 429)
    receiver.extra_headers = {"Retry-After": "1"}
    config = f"""
observers:
  - name: obs-busy
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/busy"}}]
    retry: {{max_attempts: 3, initial_delay_ms: 10, max_delay_ms: 5000}}
"""
    worker = start_worker(db, tmp_path, config)
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('x')")
        first, second = receiver.wait_for(2, "/busy")[:2]
    finally:
        worker.stop()
    assert second.at - first.at >= 1.0  # not the 10 ms backoff


def test_a_lease_expiring_on_the_last_attempt_dead_letters_the_job(db: str, tmp_path: Path) -> None:
    config = """
observers:
  - name: obs-slow
    entity: Order
    actions: [{type: python, handler: "handlers:slow"}]
    retry: {max_attempts: 1}
"""
    first = start_worker(db, tmp_path, config, "--lease-seconds", "1", name="first")
    second = None
    try:
        execute(db, "INSERT INTO orders (status) VALUES ('x')")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM starts") == 1)
        # Killed once its start is recorded (a job killed in its first 50 ms, before that,
        # runs again without spending the attempt: see README).
        wait_until(lambda: scalar(db, "SELECT attempted_at IS NOT NULL FROM pgobs.jobs"))
        first.kill()
        second = start_worker(db, tmp_path, config, "--lease-seconds", "1", name="second")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pgobs.dlq") == 1, timeout=20)
    finally:
        if second:
            second.stop()
        first.stop()
    assert scalar(db, "SELECT count(*) FROM starts") == 1  # never ran again
    assert "lease expired on the last attempt" in scalar(db, "SELECT last_error FROM pgobs.dlq")


def test_a_hanging_endpoint_does_not_starve_a_healthy_observer(
    db: str, receiver: Receiver, tmp_path: Path
) -> None:
    """--concurrency 8 and one endpoint that hangs for its whole timeout: it fills its share of
    the runners, not all of them, and the healthy observer's deliveries stay prompt (they once
    waited 46 s)."""
    hanging, stop_hanging = start_receiver()
    hanging.delay_s = 10
    config = f"""
observers:
  - name: obs-hanging
    entity: Order
    actions: [{{type: webhook, url: "{hanging.url}/hang", timeout_ms: 10000}}]
  - name: obs-healthy
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/ok"}}]
"""
    worker = start_worker(db, tmp_path, config, "--concurrency", "8", "--grace-seconds", "1")
    sent: dict[int, float] = {}
    try:
        wait_until(lambda: "is the leader" in worker.output())
        for i in range(1, 61):
            sent[i] = time.monotonic()
            execute(db, "INSERT INTO orders (id, status) VALUES (%s, 'x')", (i,))
            time.sleep(0.05)
        got = receiver.wait_for(60, "/ok", timeout=30)
    finally:
        worker.stop()
        stop_hanging()
    waits = sorted(r.at - sent[r.json()["data"]["id"]] for r in got)
    assert waits[int(len(waits) * 0.99) - 1] < 1.0, waits[-5:]
    assert hanging.max_in_flight <= 6


def test_a_hanging_target_shared_by_two_observers_fills_only_its_share(
    db: str, receiver: Receiver, tmp_path: Path
) -> None:
    """Two observers call one hanging host: the limit is per target too, so a third observer
    calling elsewhere still gets runners."""
    hanging, stop_hanging = start_receiver()
    hanging.delay_s = 5
    config = f"""
observers:
  - name: obs-a
    entity: Order
    actions: [{{type: webhook, url: "{hanging.url}/a", timeout_ms: 5000}}]
  - name: obs-b
    entity: Order
    actions: [{{type: webhook, url: "{hanging.url}/b", timeout_ms: 5000}}]
  - name: obs-healthy
    entity: Order
    actions: [{{type: webhook, url: "{receiver.url}/ok"}}]
"""
    worker = start_worker(db, tmp_path, config, "--concurrency", "8", "--grace-seconds", "1")
    try:
        wait_until(lambda: "is the leader" in worker.output())
        execute(db, "INSERT INTO orders (status) SELECT 'x' FROM generate_series(1, 20)")
        wait_until(lambda: hanging.in_flight >= 6)
        receiver.wait_for(20, "/ok", timeout=4)  # before any hanging call could end
        assert hanging.max_in_flight <= 6
    finally:
        worker.stop()
        stop_hanging()
