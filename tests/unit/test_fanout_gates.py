"""Planning a batch with dedup (no I/O): each deduplicated (event, observer) gets one gate, its
jobs name it, and a second event of the batch with the same fingerprint is skipped at once."""

from __future__ import annotations

from pgobs.config.loader import parse_config
from pgobs.events import Event
from pgobs.listener.fanout import ObserverIndex, plan_fanout

CONFIG = """
observers:
  - name: plain
    entity: Order
    actions: [{type: log}]
  - name: once
    entity: Order
    dedup: {window: 1m}
    actions: [{type: log, name: a}, {type: log, name: b}]
  - name: keyed
    entity: Order
    dedup: {key: "{{ data.nope.deeper | int // 0 }}", window: 1h}
    actions: [{type: log}]
"""


def order(event_id: int, status: str) -> Event:
    return Event(
        id=event_id,
        entity_type="Order",
        event_type="UPDATE",
        entity_id="7",
        data={"id": 7, "status": status},
    )


def test_gates_of_a_batch() -> None:
    config, issues = parse_config(CONFIG, "test")
    assert config is not None, issues
    plan = plan_fanout(
        [order(1, "paid"), order(2, "paid"), order(3, "shipped")], ObserverIndex(config)
    )
    gates = plan.gates.items
    assert [(g.event_id, g.observer, g.mode) for g in gates] == [
        (1, "once", "check"),
        (1, "keyed", "check"),
        (2, "once", "skip"),  # the same change as event 1, in the same batch
        (2, "keyed", "skip"),
        (3, "once", "check"),
        (3, "keyed", "check"),
    ]
    assert gates[0].window_s == 60.0 and gates[1].window_s == 3600.0
    # Jobs: plain has none (0), each of once's two actions names its gate.
    assert list(zip(plan.event_ids, plan.job_gates, strict=True)) == [
        (1, 0), (1, 1), (1, 1), (1, 2),
        (2, 0), (2, 3), (2, 3), (2, 4),
        (3, 0), (3, 5), (3, 5), (3, 6),
    ]  # fmt: skip
    # keyed's template fails on these events (a field they lack): audited, deduplicated by change.
    assert plan.audit["audit_observers"] == ["keyed"] * 3
    assert "dedup key failed" in plan.audit["audit_messages"][0]
    params = plan.params()
    assert params["gate_modes"] == ["check", "check", "skip", "skip", "check", "check"]
    assert params["batch_id"] is None
