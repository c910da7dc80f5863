"""Prometheus metrics (phase 8.7 names), served by ``pgobs worker --metrics-port``."""

from __future__ import annotations

import errno

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from pgobs.errors import PgobsError
from pgobs.observability.fleet import FleetGauges
from pgobs.observability.server import start_server

events_processed = Counter(
    "observer_events_processed",
    "Events the listener has fanned out.",
    ["listener_id"],
)
listener_health = Gauge(
    "observer_listener_health",
    "1 while the listener candidate is connected and working, 0 while it recovers.",
    ["listener_id"],
)
listener_is_leader = Gauge(
    "observer_listener_is_leader", "1 while this process leads its listener_id.", ["listener_id"]
)
listener_lag_events = Gauge(
    "observer_listener_lag_events", "Committed events not yet fanned out.", ["listener_id"]
)
listener_lag_seconds = Gauge(
    "observer_listener_lag_seconds",
    "Age of the oldest committed event not yet fanned out (0 when none).",
    ["listener_id"],
)
listener_open_writer_seconds = Gauge(
    "observer_listener_open_writer_seconds",
    "Age of the oldest open transaction that has written events (they go out when it commits).",
    ["listener_id"],
)
listener_batch_bytes = Histogram(
    "observer_listener_batch_bytes",
    "Data in one fan-out batch (bounded by the listener's batch_bytes past its first row).",
    buckets=(1e3, 1e4, 1e5, 1e6, 4e6, 16e6, 64e6, 256e6),
)
jobs_created = Counter("observer_jobs_created", "Jobs written by fan-out.", ["observer"])
events_matched = Counter(
    "observer_events_matched", "Events an observer matched (fanned out).", ["observer"]
)
fleet = FleetGauges()  # queue depth, dead letters, heartbeats: published by the leader only
REGISTRY.register(fleet)
event_processing_duration = Histogram(
    "observer_event_processing_duration_seconds",
    "Time to fan out one batch of events, per event.",
    buckets=(0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
)
actions_executed = Counter(
    "observer_actions_executed",
    "Action runs that finished, any outcome.",
    ["observer", "action_type"],
)
actions_failed = Counter(
    "observer_actions_failed", "Action runs that failed.", ["observer", "action_type", "kind"]
)
action_duration = Histogram(
    "observer_action_duration_seconds",
    "How long actions take.",
    ["observer", "action_type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
dlq_moved = Counter("observer_dlq_moved", "Jobs moved to the dead-letter queue.", ["observer"])
jobs_in_flight = Gauge("observer_jobs_in_flight", "Actions running in this process.")
leases_lost = Counter(
    "observer_leases_lost",
    "Jobs this worker stopped or whose result it discarded because its lease had lapsed.",
    ["observer"],
)
handler_threads_stuck = Gauge(
    "observer_handler_threads_stuck",
    "Threads still running a sync handler whose timeout has passed (they count against the "
    "thread bound until they return).",
)
event_loop_blocked_seconds = Counter(
    "observer_event_loop_blocked_seconds",
    "Seconds an event loop of this process was held by blocking or CPU-bound code (stalls "
    "longer than the watchdog's threshold, counted whole).",
    ["loop"],
)
leader_fenced = Counter(
    "observer_leader_fenced",
    "Leaders whose session this process ended because their fan-out loop fell silent.",
    ["listener_id"],
)


circuit_state = Gauge(
    "observer_circuit_state",
    "This worker's view of a circuit: 0 closed, 1 half-open (one probe for the fleet), 2 open.",
    ["target"],
)
circuit_deferred = Counter(
    "observer_circuit_deferred",
    "Jobs deferred to their circuit's probe time without spending an attempt.",
    ["observer", "target"],
)
circuit_transitions = Counter(
    "observer_circuit_transitions",
    "Circuit state changes this worker made for the fleet (opened, probed, closed).",
    ["target", "to"],
)
circuit_fast_fail = Counter(
    "observer_circuit_fast_fail",
    "Calls not made because their circuit was open or another worker was probing it.",
    ["target"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics, /healthz and /readyz on ``port`` (in a daemon thread); a taken port is
    a one-line error."""
    try:
        start_server(port, host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PgobsError(
                f"metrics port {port} is already in use",
                "pick another --metrics-port, or 0 for none",
            ) from exc
        raise PgobsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc


# -- dedup and the enrichment cache (pgobs.reliability) ------------------------------------------
dedup_skipped = Counter(
    "observer_dedup_skipped", "Events an observer skipped as duplicates.", ["observer"]
)
dedup_store_up = Gauge(
    "observer_dedup_store_up", "Whether the dedup fast path answers (1) or not (0).", ["store"]
)
dedup_fallback = Counter(
    "observer_dedup_fallback",
    "Fan-out batches whose fingerprints Postgres checked because Redis failed or was down.",
    ["reason"],
)
cache_hits = Counter("observer_cache_hits", "Enrichment lookups answered by the cache.", ["lookup"])
cache_misses = Counter(
    "observer_cache_misses", "Enrichment lookups the cache could not answer.", ["lookup"]
)
lookup_duration = Histogram(
    "observer_lookup_duration_seconds",
    "Time to an enrichment lookup's result, cache included.",
    ["lookup"],
    buckets=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
)
