"""Runs one job's action with its timeout, and turns whatever happened into an outcome."""

from __future__ import annotations

import logging
import time
from typing import Any, assert_never

import httpx
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from pgobs.actions.cache import invalidate
from pgobs.actions.database import call_function
from pgobs.actions.mail import send_email
from pgobs.actions.python import call_handler
from pgobs.actions.slack import send_slack
from pgobs.actions.specs import (
    ActionSpec,
    CacheSpec,
    DatabaseSpec,
    EmailSpec,
    LogSpec,
    PythonSpec,
    SlackSpec,
    WebhookSpec,
    action_type,
)
from pgobs.actions.webhook import send_webhook
from pgobs.config.model import Config
from pgobs.db.connect import Connection
from pgobs.events import Event
from pgobs.observability import metrics
from pgobs.queue.jobs import Job
from pgobs.queue.outcome import ActionFailed, Failure
from pgobs.templates import TemplateFailed

log = logging.getLogger("pgobs.actions")


class ActionExecutor:
    def __init__(
        self, config: Config, pool: AsyncConnectionPool[Connection], http: httpx.AsyncClient
    ) -> None:
        self.observers = {obs.name: obs for obs in config.observers}
        self.pool = pool
        self.http = http
        self._children: dict[str, tuple[Histogram, Counter]] = {}

    def timeout_s(self, job: Job) -> float:
        """How long ``job``'s action may run; the worker pool enforces it."""
        obs = self.observers.get(job.observer)
        if obs is None or job.action_index >= len(obs.actions):
            return 1.0
        return obs.actions[job.action_index].timeout_ms / 1000

    def shortest_timeout_s(self) -> float:
        timeouts = [a.timeout_ms for obs in self.observers.values() for a in obs.actions]
        return min(timeouts, default=10_000) / 1000

    def timed_out(self, job: Job) -> Failure:
        obs = self.observers[job.observer]
        spec = obs.actions[job.action_index]
        kind = action_type(spec)
        self._metrics(kind)[1].inc()
        metrics.actions_failed.labels(kind, "transient").inc()
        return Failure(job.id, f"{kind} action timed out after {spec.timeout_ms} ms", "transient")

    async def run(self, job: Job) -> Failure | None:
        """Run ``job``'s action; None on success, else the failure and its class.

        The caller enforces ``timeout_s(job)``: one cancel scope per job cost more CPU than the
        rest of a no-op job's run together, so the pool keeps one per runner instead.
        """
        obs = self.observers.get(job.observer)
        if obs is None or job.action_index >= len(obs.actions):
            return Failure(
                job.id,
                f"observer {job.observer!r} action {job.action_index} is not in the loaded config",
                "permanent",
            )
        if job.event is None:
            return Failure(
                job.id,
                "the event no longer exists (purged) and the job kept no payload",
                "permanent",
            )
        spec = obs.actions[job.action_index]
        kind = action_type(spec)
        started = time.perf_counter()
        failure: Failure | None = None
        try:
            await self._dispatch(spec, job, job.event)
        except ActionFailed as exc:
            failure = Failure(job.id, exc.message, exc.kind, exc.retry_after_s)
        except TemplateFailed as exc:
            failure = Failure(job.id, str(exc), "permanent")
        except Exception as exc:
            log.exception("%s action of %s raised", kind, job.observer)
            failure = Failure(
                job.id, f"{kind} action raised {type(exc).__name__}: {exc}", "transient"
            )
        duration, executed = self._metrics(kind)
        duration.observe(time.perf_counter() - started)
        executed.inc()
        if failure is not None:
            metrics.actions_failed.labels(kind, failure.kind).inc()
        return failure

    def _metrics(self, kind: str) -> tuple[Histogram, Counter]:
        """The labelled children for ``kind``, looked up once (labels() is costly per job)."""
        found = self._children.get(kind)
        if found is None:
            found = (metrics.action_duration.labels(kind), metrics.actions_executed.labels(kind))
            self._children[kind] = found
        return found

    async def _dispatch(self, spec: ActionSpec, job: Job, event: Event) -> None:
        if isinstance(spec, PythonSpec):  # first: the hot path of the benchmarks
            await call_handler(spec, event)
            return
        context = _context(event, job)
        if isinstance(spec, WebhookSpec):
            await send_webhook(self.http, spec, context, job.webhook_id)
        elif isinstance(spec, SlackSpec):
            await send_slack(self.http, spec, context)
        elif isinstance(spec, EmailSpec):
            await send_email(spec, context, job.webhook_id)
        elif isinstance(spec, DatabaseSpec):
            await call_function(self.pool, spec, context["event"])
        elif isinstance(spec, LogSpec):
            message = (
                spec.message.render(context)
                if spec.message
                else (f"{job.observer}: {event.entity_type} {event.entity_id} {event.event_type}")
            )
            log.log(logging.getLevelName(spec.level.upper()), "%s", message)
        elif isinstance(spec, CacheSpec):
            await invalidate(self.pool, spec, context)
        else:
            assert_never(spec)


def _context(event: Event, job: Job) -> dict[str, Any]:
    """What templates see: the envelope's fields at the top, and ``event`` for the whole."""
    envelope = event.envelope()
    envelope["observer"] = job.observer
    return {**envelope, "event": envelope, "attempt": job.attempts}
