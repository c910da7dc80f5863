"""The leader reads the fleet-wide gauges (queue depth, dead letters, heartbeats) once per
interval and publishes them in its process (:mod:`pgobs.observability.fleet`)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.observability import metrics
from pgobs.observability.fleet import FleetReading

FLEET_INTERVAL_S = 5.0  # a third of Prometheus' default scrape interval: fresh, yet cheap


async def read_fleet(conn: Connection, observers: Iterable[str] = ()) -> FleetReading:
    """The fleet's numbers now, in one statement."""
    cur = await conn.execute(query("fleet_gauges"))
    return FleetReading.from_rows(await cur.fetchall(), observers)


class FleetPublisher:
    """Called on every listener heartbeat; reads and publishes when leading and due, and stops
    publishing once this process no longer leads."""

    def __init__(self, observers: Iterable[str], interval_s: float = FLEET_INTERVAL_S) -> None:
        self.observers = tuple(observers)
        self.interval_s = interval_s
        self._read_at: float | None = None

    async def tick(self, conn: Connection, *, leading: bool) -> None:
        if not leading:
            if self._read_at is not None:
                metrics.fleet.publish(None)
                self._read_at = None
            return
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.interval_s:
            return
        metrics.fleet.publish(await read_fleet(conn, self.observers))
        self._read_at = now
