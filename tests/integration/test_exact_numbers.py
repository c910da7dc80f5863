"""Exact numbers end to end: a ``numeric`` column reaches every action with its exact value and
digits, and conditions compare it as a decimal (a real worker, receiver, SMTP server, SQL)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support import Receiver, Worker, execute, fetch, run_pgobs, scalar, wait_until

TOTALS = ["250.00", "12345678901234567.89", "100.1", "100.100000000000000001"]


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


def test_numeric_values_keep_their_digits_in_every_action(
    dsn: str, receiver: Receiver, smtp: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, smtp_port = smtp
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric, paid boolean)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE TABLE handled (event_id bigint, how text)")
    execute(dsn, "CREATE TABLE got (entity_id text, total jsonb, total_text text)")
    execute(
        dsn,
        "CREATE FUNCTION public.keep(event jsonb) RETURNS void LANGUAGE sql AS $$ "
        "INSERT INTO got VALUES (event->>'entity_id', event->'data'->'total', "
        "event->'data'->>'total') $$",
    )
    config = tmp_path / "observers.yaml"
    config.write_text(
        f"""
observers:
  - name: obs-all
    entity: Order
    actions:
      - type: webhook
        url: {receiver.url}/envelope
      - type: webhook
        url: {receiver.url}/body
        body_template:
          total: "{{{{ data.total }}}}"
          paid: "{{{{ data.paid }}}}"
          label: "Total {{{{ data.total }}}}"
          row: "{{{{ data }}}}"
      - type: slack
        webhook_url: {receiver.url}/slack
        message_template: "Order {{{{ data.id }}}}: {{{{ data.total }}}}"
      - type: email
        host: 127.0.0.1
        port: {smtp_port}
        from: shop@example.com
        to: [ops@example.com]
        subject_template: "Order {{{{ data.id }}}}"
        body_template: "Total: {{{{ data.total }}}}"
      - type: log
        message_template: "logged {{{{ data.id }}}} total {{{{ data.total }}}}"
      - type: database
        function: public.keep
      - type: python
        handler: handlers:record_total
  - name: obs-over
    entity: Order
    condition: "total > 100.10"
    actions: [{{type: webhook, url: "{receiver.url}/over"}}]
  - name: obs-equal
    entity: Order
    condition: "total == 250 && total in [250, 1.5]"
    actions: [{{type: webhook, url: "{receiver.url}/equal"}}]
"""
    )
    worker = Worker(dsn, "--config", str(config), log_path=tmp_path / "worker.log")
    try:
        for total in TOTALS:
            execute(dsn, "INSERT INTO orders (total, paid) VALUES (%s::numeric, true)", (total,))
        receiver.wait_for(4, "/slack")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 0)
        wait_until(lambda: len(box.messages) == 4)
    finally:
        worker.stop()
    assert scalar(dsn, "SELECT count(*) FROM pgobs.dlq") == 0, worker.output()

    def by_order(path: str) -> dict[str, bytes]:
        return {r.json()["entity_id"]: r.body for r in receiver.to(path)}

    envelopes = by_order("/envelope")
    for entity_id, total in enumerate(TOTALS, start=1):
        assert f'"total":{total}'.encode() in envelopes[str(entity_id)]

    bodies = {r.body for r in receiver.to("/body")}
    for entity_id, total in enumerate(TOTALS, start=1):
        row = f'{{"id":{entity_id},"paid":true,"total":{total}}}'  # jsonb's key order
        expected = f'{{"total":{total},"paid":true,"label":"Total {total}","row":{row}}}'
        assert expected.encode() in bodies

    texts = sorted(r.json()["text"] for r in receiver.to("/slack"))
    assert texts == [f"Order {n}: {t}" for n, t in enumerate(TOTALS, start=1)]
    mails = sorted(message_from_bytes(m.content).get_payload().strip() for m in box.messages)
    assert mails == sorted(f"Total: {t}" for t in TOTALS)
    assert "logged 2 total 12345678901234567.89" in worker.output()

    got = fetch(dsn, "SELECT entity_id, total = %s::jsonb, total_text FROM got", (TOTALS[1],))
    assert (str(2), True, TOTALS[1]) in got
    assert sorted(r[2] for r in got) == sorted(TOTALS)
    kept = scalar(dsn, "SELECT (total)::numeric FROM got WHERE entity_id = '2'")
    assert str(kept) == "12345678901234567.89"

    handled = sorted(r[0] for r in fetch(dsn, "SELECT how FROM handled"))
    assert handled == sorted(f"Decimal {t}" for t in TOTALS)

    assert sorted(by_order("/over")) == ["1", "2", "4"]  # 100.1 is not above 100.10
    assert sorted(by_order("/equal")) == ["1"]  # 250.00 == 250


def test_dlq_show_prints_numbers_with_their_digits(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE TABLE handled (event_id bigint, how text)")
    config = tmp_path / "observers.yaml"
    config.write_text(
        "observers:\n  - name: obs-reject\n    entity: Order\n"
        "    actions: [{type: python, handler: 'handlers:reject'}]\n"
    )
    worker = Worker(dsn, "--config", str(config), log_path=tmp_path / "worker.log")
    try:
        execute(dsn, "INSERT INTO orders (total) VALUES (12345678901234567.89), (250.00)")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.dlq") == 2)
    finally:
        worker.stop()
    shown = [
        run_pgobs(dsn, "dlq", "show", str(dead_id), "--json").stdout
        for (dead_id,) in fetch(dsn, "SELECT id FROM pgobs.dlq ORDER BY event_id")
    ]
    assert '"total": 12345678901234567.89' in shown[0]
    assert '"total": 250.00' in shown[1]
