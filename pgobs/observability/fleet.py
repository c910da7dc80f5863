"""Fleet-wide gauges: numbers about the whole deployment (queue depth, dead letters, leader
heartbeats) that only the database knows.

Every process could count them, but a fleet of 20 workers would then run 20 count queries per
interval for the same answer; the leading listener reads them once per interval
(:mod:`pgobs.listener.fleet`) and this collector serves its latest reading. A process that does
not lead serves none, so summing over the fleet gives the leader's numbers (with several
listener ids, each leader serves them: aggregate with ``max``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOB_STATES = ("available", "scheduled", "running")


@dataclass(frozen=True, slots=True)
class FleetReading:
    """One reading of the fleet's numbers; ``read_at`` is ``time.monotonic()`` when it was taken.

    Heartbeat ages are those seen by the database at reading time; :meth:`heartbeat_ages` adds
    the time since, so a reading that stops being refreshed shows ever older heartbeats (no
    clock of this host is compared with the server's).
    """

    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (observer, state) -> count
    oldest_job_s: dict[tuple[str, str], float] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)  # observer -> dead letters
    heartbeat_age_s: dict[str, float] = field(default_factory=dict)  # listener_id -> age
    lag_s: dict[str, float] = field(default_factory=dict)  # listener_id -> the leader's lag
    leaders: dict[str, int] = field(default_factory=dict)  # listener_id -> running leaders
    read_at: float = field(default_factory=time.monotonic)

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[str, str, str, float, float]], observers: Iterable[str] = ()
    ) -> FleetReading:
        """Rows of the ``fleet_gauges`` statement: (kind, name, state, value, age). Configured
        ``observers`` with nothing queued or dead show zeros rather than no series at all."""
        reading = cls()
        for observer in observers:
            reading.dlq[observer] = 0
            for state in JOB_STATES:
                reading.jobs[observer, state] = 0
        for kind, name, state, value, age in rows:
            if kind == "jobs":
                reading.jobs[name, state] = int(value)
                reading.oldest_job_s[name, state] = age
            elif kind == "dlq":
                reading.dlq[name] = int(value)
            elif kind == "heartbeat":
                reading.heartbeat_age_s[name] = value
            elif kind == "lag":
                reading.lag_s[name] = value
            elif kind == "leaders":
                reading.leaders[name] = int(value)
        return reading

    def heartbeat_ages(self) -> dict[str, float]:
        since = time.monotonic() - self.read_at
        return {name: age + since for name, age in self.heartbeat_age_s.items()}

    def metrics(self) -> list[Metric]:
        """The gauges, as Prometheus metric families (the lag is each listener's own gauge)."""
        jobs = GaugeMetricFamily(
            "observer_jobs",
            "Jobs in the queue per observer and state (available: due; scheduled: waiting to "
            "retry; running: leased by a worker).",
            labels=["observer", "state"],
        )
        oldest = GaugeMetricFamily(
            "observer_jobs_oldest_age_seconds",
            "Age of the oldest job per observer and state (0 when none).",
            labels=["observer", "state"],
        )
        for (observer, state), count in sorted(self.jobs.items()):
            jobs.add_metric([observer, state], count)
            oldest.add_metric([observer, state], self.oldest_job_s.get((observer, state), 0.0))
        dlq = GaugeMetricFamily(
            "observer_dlq_items", "Dead letters per observer.", labels=["observer"]
        )
        for observer, count in sorted(self.dlq.items()):
            dlq.add_metric([observer], count)
        total = GaugeMetricFamily(
            "observer_dlq_items_total", "Dead letters, all observers together."
        )
        total.add_metric([], sum(self.dlq.values()))
        heartbeat = GaugeMetricFamily(
            "observer_listener_heartbeat_age_seconds",
            "Seconds since a candidate of each listener id last wrote its heartbeat (its "
            "candidates that have not stopped; it grows when they all died).",
            labels=["listener_id"],
        )
        for listener_id, age in sorted(self.heartbeat_ages().items()):
            heartbeat.add_metric([listener_id], age)
        leaders = GaugeMetricFamily(
            "observer_listener_leaders",
            "Running leaders of each listener id the database knows (its candidates' rows, "
            "stopped ones too): 0 when every candidate of an id stopped, which its own "
            "processes, gone, can no longer report.",
            labels=["listener_id"],
        )
        for listener_id, count in sorted(self.leaders.items()):
            leaders.add_metric([listener_id], count)
        return [jobs, oldest, dlq, total, heartbeat, leaders]


class FleetGauges(Collector):
    """Serves the latest :class:`FleetReading` published in this process, or nothing."""

    def __init__(self) -> None:
        self.reading: FleetReading | None = None

    def publish(self, reading: FleetReading | None) -> None:
        """A new reading; None once this process no longer leads (it stops serving them)."""
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        reading = self.reading
        if reading is not None:
            yield from reading.metrics()

    def describe(self) -> Iterator[Metric]:
        # Names for the registry's collision check, whether or not a reading exists yet.
        yield from FleetReading().metrics()
