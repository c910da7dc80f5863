"""The circuit breaker, one per target, shared by the whole fleet through ``pgobs.circuits``.

Each worker keeps a view of every circuit it uses. The hot path touches only that view: a job
whose circuit is closed runs (a dict lookup), and its outcome adds one to a counter. A sync task
reports the counters and reads the fleet's state back in one statement, every second, or within
``URGENT_GAP_S`` of a failure; a worker whose own counts trip a circuit stops calling at once,
and every transition is NOTIFYed, so the other workers stop within a round trip.

While a circuit is open its jobs are deferred to the probe time without spending an attempt.
From then on one worker of the fleet is granted the probe (a conditional UPDATE); the others
keep deferring, by about a second, until the probe has closed the circuit or opened it again for
twice as long. Only transient failures count: a 404 is the caller's problem, not the target's.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio
import psycopg
from prometheus_client import Gauge

from pgobs.actions.failures import Failure
from pgobs.config.circuit import DEFAULT_POLICY, CircuitPolicy, circuit_key
from pgobs.config.model import Observer
from pgobs.db.notify import Doorbell
from pgobs.observability import metrics
from pgobs.queue.circuit_store import CircuitRow, CircuitStore, Report

log = logging.getLogger("pgobs.circuits")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
PROBE: Literal["probe"] = "probe"
SYNC_S = 1.0  # reports and reads at least this often
URGENT_GAP_S = 0.02  # after a failure, at most this long before reporting it
PROBE_MARGIN_S = 5.0  # a probe's grant outlives its action's timeout by this much
RECHECK_MAX_S = 1.0  # while the fleet probes, jobs are deferred by about this much at most
# Jobs per worker and probe time that come back at the probe time (one of the fleet's probes);
# the others wait for the circuit to close, which makes them due (or for max_open_for more), so
# a backlog does not come due at every probe time only to be deferred again ahead of the jobs
# of other targets.
PROBE_CANDIDATES = 2


class CircuitJob(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def observer(self) -> str: ...
    @property
    def action(self) -> str: ...


@dataclass(slots=True)
class Circuit:
    """This worker's view of one circuit."""

    key: str
    policy: CircuitPolicy
    state: str = CLOSED
    fleet_state: str = CLOSED  # as last read from pgobs.circuits
    fleet_requests: float = 0.0  # the window's calls and failures at the last sync, fleet-wide
    fleet_failures: float = 0.0
    requests: int = 0  # calls here since the last report
    failures: int = 0
    sending: tuple[int, int] = (0, 0)  # calls and failures in the report under way
    error: str | None = None  # the last transient failure not reported yet
    wait_until: float = 0.0  # open: the probe time; half-open: when the probe's grant ends
    open_s: float = 0.0
    asking: bool = False  # a runner here asks for the probe
    probing: int | None = None  # the job probing for the fleet, when it is this worker's
    tripped_in: int = -1  # the sync round during which this worker opened it on its own counts
    action_keys: tuple[str, ...] = ()  # ``observer/action`` of the actions that use it
    candidates: int = 0  # jobs sent back for the probe time ``candidates_for``
    candidates_for: float = 0.0
    gauge: Gauge | None = field(default=None, repr=False)

    def tripped(self) -> bool:
        """Whether the window, this worker's unreported calls included, opens the circuit."""
        requests = self.fleet_requests + self.sending[0] + self.requests
        failures = self.fleet_failures + self.sending[1] + self.failures
        return (
            requests >= self.policy.min_requests
            and failures > 0
            and failures >= self.policy.failure_threshold * requests
        )

    def spread_s(self) -> float:
        """Deferred jobs come back spread over this much time, so the first to come back (a
        random one) probes and the others find the probe's result."""
        return min(RECHECK_MAX_S, self.policy.open_for_s / 2)

    def recheck_s(self) -> float:
        return random.uniform(0.5, 1.0) * min(RECHECK_MAX_S, self.policy.open_for_s)


class CircuitBoard:
    def __init__(self, store: CircuitStore, observers: Iterable[Observer]) -> None:
        self.store = store
        self.circuits: dict[str, Circuit] = {}
        self._by_action: dict[tuple[str, str], Circuit] = {}
        for obs in observers:
            policies = obs.circuits or itertools.repeat(DEFAULT_POLICY)
            for i, (name, spec, policy) in enumerate(
                zip(obs.action_names, obs.actions, policies, strict=False)
            ):
                key = circuit_key(spec, policy)
                if key is None:
                    continue
                circuit = self.circuits.setdefault(key, Circuit(key, policy))
                self._by_action[(obs.name, name)] = circuit
                self._by_action[(obs.name, f"#{i}")] = circuit
                circuit.action_keys += (f"{obs.name}/{name}", f"{obs.name}/#{i}")
        for circuit in self.circuits.values():
            circuit.gauge = metrics.circuit_state.labels(circuit.key)
            circuit.gauge.set(0)
        self._bell = Doorbell()
        self._round = 0
        self._probes: list[tuple[Circuit, Failure | None]] = []  # results not reported yet
        self._notify = False  # this worker changed a circuit: tell the others
        self._released: list[Circuit] = []  # closed: their waiting jobs are due now

    def of(self, job: CircuitJob) -> Circuit | None:
        return self._by_action.get((job.observer, job.action))

    # -- the runners' side --------------------------------------------------------------------

    def verdict(self, c: Circuit) -> float | Literal["probe"]:
        """For a circuit that is not closed: defer the job by this many seconds, or probe."""
        now = anyio.current_time()
        if c.state == OPEN and c.wait_until > now:
            wait_s = c.wait_until - now + random.uniform(0, c.spread_s())
            if c.candidates_for != c.wait_until:
                c.candidates_for, c.candidates = c.wait_until, 0
            if c.candidates < PROBE_CANDIDATES:
                c.candidates += 1
                return wait_s
            return wait_s + c.policy.max_open_for_s
        if c.asking or c.probing is not None or (c.state == HALF_OPEN and c.wait_until > now):
            return c.recheck_s()
        return PROBE

    async def take_probe(self, c: Circuit, job: CircuitJob, timeout_s: float) -> bool:
        """Ask for the fleet's one probe; True when ``job`` is it."""
        c.asking = True
        lease_s = timeout_s + PROBE_MARGIN_S
        try:
            was = await self.store.take_probe(c.key, lease_s)
        except psycopg.Error as exc:
            log.warning("asking for the probe of circuit %s failed (%s)", c.key, exc)
            was = None
        finally:
            c.asking = False
        now = anyio.current_time()
        if was is None:
            # Another worker probes (or the probe time moved): wait for the sync to tell.
            if c.state == OPEN:
                self._move(c, HALF_OPEN, "the probe is another worker's (or not due yet)")
            c.wait_until = now + c.recheck_s()
            self._bell.ring()
            return False
        c.probing = job.id
        c.wait_until = now + lease_s
        if was == OPEN:
            metrics.circuit_transitions.labels(c.key, HALF_OPEN).inc()
            self._notify = True
            self._bell.ring()
        self._move(c, HALF_OPEN, f"probing it with job {job.id}")
        return True

    def deferred(self, c: Circuit, job: CircuitJob) -> None:
        metrics.circuit_fast_fail.labels(c.key).inc()
        metrics.circuit_deferred.labels(job.observer, c.key).inc()

    def record(self, c: Circuit, job: CircuitJob, failure: Failure | None) -> float | None:
        """Count a call's outcome; returns how long to defer its job (it failed while the
        circuit is open: its retry would only be deferred), or None for the usual outcome."""
        if failure is None and c.probing is None and c.state == CLOSED:
            c.requests += 1  # the hot path: one call that went well
            return None
        transient = failure is not None and failure.kind == "transient"
        if c.probing == job.id:
            c.probing = None
            self._probes.append((c, failure if transient else None))
            self._bell.ring()
            if not transient:
                c.wait_until = anyio.current_time()  # the next probe may go at once
                if c.policy.success_threshold == 1:
                    self._move(c, CLOSED, "the probe succeeded")
                return None
            c.open_s = min(max(c.open_s, c.policy.open_for_s) * 2, c.policy.max_open_for_s)
            c.wait_until = anyio.current_time() + c.open_s
            self._move(c, OPEN, f"the probe failed ({_short(failure)})")
            return self._defer_failed(c, job)
        if c.state != CLOSED:
            # Called before this worker knew it had opened: not counted, deferred if it failed.
            return self._defer_failed(c, job) if transient else None
        c.requests += 1
        if not transient:
            return None
        c.failures += 1
        c.error = failure.message if failure is not None else None
        self._bell.ring()
        if not c.tripped():
            return None
        c.tripped_in = self._round
        c.open_s = c.policy.open_for_s
        c.wait_until = anyio.current_time() + c.open_s
        self._move(c, OPEN, self._why_open(c))
        return self._defer_failed(c, job)

    def abandon(self, c: Circuit, job: CircuitJob) -> None:
        """``job`` stopped without a result (shutdown, lease lost): if it was the probe, its
        grant lapses and the fleet probes again after it."""
        if c.probing == job.id:
            c.probing = None

    def _defer_failed(self, c: Circuit, job: CircuitJob) -> float:
        metrics.circuit_deferred.labels(job.observer, c.key).inc()
        verdict = self.verdict(c)
        return verdict if verdict != PROBE else c.recheck_s()

    # -- the sync task ------------------------------------------------------------------------

    async def run(self, changed: Doorbell | None) -> None:
        """Report and read until cancelled; ``changed`` rings when another worker NOTIFYs."""
        if not self.circuits:
            return
        async with anyio.create_task_group() as tg:
            if changed is not None:
                tg.start_soon(self._forward, changed)
            last = -SYNC_S
            while True:
                await self._bell.wait(max(0.0, last + SYNC_S - anyio.current_time()))
                gap = last + URGENT_GAP_S - anyio.current_time()
                if gap > 0:
                    await anyio.sleep(gap)
                last = anyio.current_time()
                await self.sync()

    async def _forward(self, changed: Doorbell) -> None:
        while True:
            if await changed.wait(3600):
                self._bell.ring()

    async def sync(self) -> None:
        """One round: probe results, then the counts; the fleet's state comes back."""
        try:
            await self._report_probes()
            self._round += 1
            sent_in = self._round
            reports = []
            for c in self.circuits.values():
                c.sending = (c.requests, c.failures)
                c.requests = c.failures = 0
                if c.sending[0]:
                    p = c.policy
                    reports.append(
                        Report(
                            c.key,
                            *c.sending,
                            c.error,
                            p.failure_threshold,
                            p.min_requests,
                            p.window_s,
                            p.open_for_s,
                        )
                    )
                    c.error = None
            try:
                rows = await self.store.sync(reports, list(self.circuits))
            except psycopg.Error as exc:
                log.warning("reporting circuit counts failed (%s); retrying", exc)
                for c in self.circuits.values():
                    c.requests += c.sending[0]
                    c.failures += c.sending[1]
                    c.sending = (0, 0)
                return
            for c in self.circuits.values():
                c.sending = (0, 0)
            for row in rows:
                self._apply(row, sent_in)
            if self._notify:
                self._notify = False
                await self.store.notify()
            released, self._released = self._released, []
            for c in released:
                count = await self.store.release_deferred(list(c.action_keys))
                log.info("circuit %s closed: %d waiting job(s) are due now", c.key, count)
        except psycopg.Error as exc:
            log.warning("syncing circuits failed (%s)", exc)

    async def _report_probes(self) -> None:
        probes, self._probes = self._probes, []
        for c, failure in probes:
            result = await self.store.probe_done(
                c.key,
                ok=failure is None,
                error=None if failure is None else failure.message,
                success_threshold=c.policy.success_threshold,
                max_open_s=c.policy.max_open_for_s,
            )
            if result is None:
                continue  # reset meanwhile, or the grant had lapsed: the fleet moved on
            metrics.circuit_transitions.labels(c.key, result.state).inc()
            self._notify = True
            c.fleet_state = result.state
            if result.state == CLOSED:
                self._released.append(c)  # the jobs that wait for the close
            c.open_s = result.open_s
            if result.state == OPEN:
                c.wait_until = anyio.current_time() + result.wait_s
            why = "the probe succeeded" if failure is None else "the probe failed"
            self._move(c, result.state, why)

    def _apply(self, row: CircuitRow, sent_in: int) -> None:
        c = self.circuits.get(row.target)
        if c is None:
            return
        c.fleet_requests, c.fleet_failures = row.requests, row.failures
        was, c.fleet_state = c.fleet_state, row.state
        if row.state == CLOSED and was != CLOSED and row.open_s == 0:
            self._released.append(c)  # closed by hand, not by a probe
        if row.tripped:
            metrics.circuit_transitions.labels(c.key, OPEN).inc()  # the statement NOTIFYed
        if c.probing is not None and not row.ours:
            c.probing = None  # reset, or its grant lapsed and went to another worker
        if c.probing is not None or any(p is c for p, _ in self._probes):
            return  # our probe runs, or its result is not reported yet: that decides
        if row.state == CLOSED and c.state == OPEN and c.tripped_in >= sent_in:
            return  # tripped here after this report left: the next one tells the fleet
        now = anyio.current_time()
        c.open_s = row.open_s
        if row.state == OPEN:
            c.wait_until = now + row.wait_s
        elif row.state == HALF_OPEN:
            c.wait_until = now + min(row.wait_s, c.recheck_s())
        self._move(c, row.state, self._seen(c, row))

    # -- transitions --------------------------------------------------------------------------

    def _seen(self, c: Circuit, row: CircuitRow) -> str:
        """Why the fleet's circuit moved, as this worker learns it."""
        if row.state == OPEN and row.tripped:
            return self._why_open(c)
        if row.state == OPEN and c.state == HALF_OPEN:
            return f"the fleet's probe failed; the next one in {row.wait_s:.1f}s"
        if row.state == OPEN:
            return f"opened by the fleet; its jobs wait {row.wait_s:.1f}s for a probe"
        if row.state == HALF_OPEN:
            return "another worker probes it"
        if row.open_s == 0:
            return "reset by hand (pgobs circuits reset)"
        return "the fleet's probe succeeded"

    def _why_open(self, c: Circuit) -> str:
        requests = c.fleet_requests + c.sending[0] + c.requests
        failures = c.fleet_failures + c.sending[1] + c.failures
        return (
            f"{failures:.0f} of {requests:.0f} calls failed in the last {c.policy.window_s:g}s; "
            f"its jobs wait {max(0.0, c.wait_until - anyio.current_time()):.1f}s for a probe"
        )

    def _move(self, c: Circuit, state: str, why: str) -> None:
        if state == c.state:
            return
        before, c.state = c.state, state
        if c.gauge is not None:
            c.gauge.set(STATE_VALUES[state])
        level = logging.WARNING if state == OPEN else logging.INFO
        log.log(level, "circuit %s: %s -> %s: %s", c.key, before, state, why)


def _short(failure: Failure | None) -> str:
    text = failure.message if failure is not None else ""
    return text if len(text) <= 200 else text[:200] + " …"
