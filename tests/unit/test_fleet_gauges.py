"""The fleet-wide gauges as the leader serves them, and readiness as /readyz reports it."""

from __future__ import annotations

import time

from pgobs.observability.fleet import FleetGauges, FleetReading
from pgobs.observability.health import Readiness

ROWS = [
    ("jobs", "orders", "available", 7.0, 12.5),
    ("jobs", "orders", "scheduled", 2.0, 30.0),
    ("dlq", "orders", "", 3.0, 0.0),
    ("dlq", "gone", "", 1.0, 0.0),  # no longer in the config, still has dead letters
    ("heartbeat", "default", "", 0.5, 0.0),
    ("lag", "default", "", 4.0, 0.0),
    ("leaders", "default", "", 1.0, 0.0),
    ("leaders", "shard-2", "", 0.0, 0.0),  # every candidate stopped: only the database knows
]


def samples(reading: FleetReading) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(s.labels.values())): float(s.value)
        for family in reading.metrics()
        for s in family.samples
    }


def test_a_reading_fills_zeros_for_configured_observers_and_keeps_the_rest() -> None:
    found = samples(FleetReading.from_rows(ROWS, observers=["orders", "quiet"]))
    assert found[("observer_jobs", ("orders", "available"))] == 7
    assert found[("observer_jobs", ("orders", "running"))] == 0
    assert found[("observer_jobs", ("quiet", "scheduled"))] == 0
    assert found[("observer_jobs_oldest_age_seconds", ("orders", "scheduled"))] == 30
    assert found[("observer_dlq_items", ("quiet",))] == 0
    assert found[("observer_dlq_items", ("gone",))] == 1
    assert found[("observer_dlq_items_total", ())] == 4
    # The lag is each listener's own gauge: the fleet reading keeps it for `pgobs metrics` only.
    assert not any(name == "observer_listener_lag_seconds" for name, _ in found)
    assert found[("observer_listener_leaders", ("default",))] == 1
    assert found[("observer_listener_leaders", ("shard-2",))] == 0


def test_heartbeat_ages_grow_while_no_new_reading_comes() -> None:
    reading = FleetReading(heartbeat_age_s={"default": 0.5}, read_at=time.monotonic() - 20)
    (age,) = reading.heartbeat_ages().values()
    assert age >= 20.5


def test_a_process_that_stops_leading_serves_no_fleet_gauges() -> None:
    gauges = FleetGauges()
    assert list(gauges.collect()) == []
    gauges.publish(FleetReading.from_rows(ROWS))
    assert {f.name for f in gauges.collect()} >= {"observer_jobs", "observer_dlq_items_total"}
    gauges.publish(None)
    assert list(gauges.collect()) == []


def test_readiness_lists_every_reason_and_starts_not_ready() -> None:
    ready = Readiness()
    assert ready.problems() == ["starting"]
    state = {"listener": "recovering"}
    ready.add("database", lambda: None)
    ready.add("listener", lambda: None if state["listener"] == "running" else state["listener"])
    assert ready.problems() == ["listener: recovering"]
    state["listener"] = "running"
    assert ready.problems() == []

    def broken() -> str | None:
        raise RuntimeError("boom")

    ready.add("broken", broken)
    assert ready.problems() == ["broken: check failed: RuntimeError('boom')"]
    ready.remove("broken")
    assert ready.problems() == []
