"""Runs one action with its timeout, and turns whatever happened into an outcome.

The executor knows nothing of the queue: it takes an :class:`ActionCall` (the event, the
observer, the action's name, the attempt and the idempotency key), which the queue's jobs are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol, assert_never

import httpx
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from pgobs.actions.cache import invalidate
from pgobs.actions.database import call_function
from pgobs.actions.failures import ActionFailed, Delivered, Failure
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
    target_of,
)
from pgobs.actions.threads import ThreadRunner
from pgobs.actions.webhook import send_webhook
from pgobs.db.connect import Connection
from pgobs.events import Event
from pgobs.observability import metrics
from pgobs.reliability.cache import Cache
from pgobs.reliability.lookups import Enricher, LookupFailed
from pgobs.reliability.specs import Lookup
from pgobs.templates import TemplateFailed

log = logging.getLogger("pgobs.actions")


class ActionCall(Protocol):
    """What the executor needs to run one action once."""

    @property
    def observer(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def event(self) -> Event | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def run_key(self) -> str: ...  # this run of the job, unique across its claims
    @property
    def action_type(self) -> str: ...  # the type the job was made for


_UNSEEN = object()


class ObserverActions(Protocol):
    """An observer's actions by name (the config's ``Observer`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def actions(self) -> tuple[ActionSpec, ...]: ...
    @property
    def enrich(self) -> tuple[Lookup, ...]: ...
    def action(self, name: str) -> ActionSpec | None: ...
    def action_keys(self) -> list[str]: ...


class ActionExecutor:
    def __init__(
        self,
        observers: Iterable[ObserverActions],
        pool: AsyncConnectionPool[Connection],
        http: httpx.AsyncClient,
        threads: ThreadRunner,
        cache: Cache,
    ) -> None:
        self.observers = {obs.name: obs for obs in observers}
        self.pool = pool
        self.http = http
        self.threads = threads
        self.cache = cache
        self.enricher = Enricher(cache, http, pool)
        self._children: dict[tuple[str, str], tuple[Histogram, Counter]] = {}
        self._targets: dict[tuple[str, str], str] = {}
        # Found once per action: the lookup is on every job's path.
        self._specs: dict[tuple[str, str], object] = {}

    def action_keys(self) -> list[str]:
        """``observer/action`` of every action this executor can run."""
        return [key for obs in self.observers.values() for key in obs.action_keys()]

    def _spec(self, call: ActionCall) -> tuple[ObserverActions, ActionSpec] | None:
        key = (call.observer, call.action)
        found = self._specs.get(key, _UNSEEN)
        if found is _UNSEEN:
            obs = self.observers.get(call.observer)
            spec = obs.action(call.action) if obs is not None else None
            found = self._specs[key] = None if obs is None or spec is None else (obs, spec)
        return found  # type: ignore[return-value]  # _UNSEEN was replaced above

    def timeout_s(self, call: ActionCall) -> float:
        """How long ``call``'s action may run; the caller enforces it."""
        found = self._spec(call)
        return found[1].timeout_ms / 1000 if found else 1.0

    def shortest_timeout_s(self) -> float:
        timeouts = [a.timeout_ms for obs in self.observers.values() for a in obs.actions]
        return min(timeouts, default=10_000) / 1000

    def target(self, call: ActionCall) -> str:
        """What the action calls (see ``target_of``): runners limit how many run at once."""
        key = (call.observer, call.action)
        target = self._targets.get(key)
        if target is None:
            found = self._spec(call)
            target = self._targets[key] = target_of(found[1]) if found else ""
        return target

    def targets(self) -> set[str]:
        return {target_of(a) for obs in self.observers.values() for a in obs.actions}

    def describe(self, call: ActionCall) -> str:
        found = self._spec(call)
        if (
            found is not None
            and isinstance(found[1], PythonSpec)
            and found[1].handler_name != call.action
        ):
            return f"{call.observer}/{call.action} ({found[1].handler_name})"
        return f"{call.observer}/{call.action}"

    def timed_out(self, call: ActionCall) -> Failure:
        found = self._spec(call)
        kind = action_type(found[1]) if found else "unknown"
        timeout_ms = found[1].timeout_ms if found else 0
        self._metrics(call.observer, kind)[1].inc()
        metrics.actions_failed.labels(call.observer, kind, "transient").inc()
        return Failure(f"{kind} action timed out after {timeout_ms} ms", "transient")

    async def run(self, call: ActionCall) -> Failure | Delivered:
        """Run ``call``'s action: ``Delivered`` on success, else the failure and its class.

        The caller enforces ``timeout_s(call)``: one cancel scope per job cost more CPU than the
        rest of a no-op job's run together, so the queue keeps one per runner instead.
        """
        found = self._spec(call)
        if found is None:
            return Failure(
                f"action {call.action!r} of observer {call.observer!r} is not in this worker's "
                "config",
                "permanent",
            )
        if call.event is None:
            return Failure(
                "the event no longer exists (purged) and the job kept no payload", "permanent"
            )
        spec = found[1]
        kind = action_type(spec)
        if call.action.startswith("#") and call.action_type and kind != call.action_type:
            # Made before actions had names: found by position, which now holds another action.
            return Failure(
                f"this job was made for the {call.action_type} action at position "
                f"{call.action[1:]} of observer {call.observer!r}, which is now a {kind} action: "
                "put that action back at its position, or drop this dead letter",
                "permanent",
            )
        started = time.perf_counter()
        failure: Failure | None = None
        status_code: int | None = None
        event = call.event
        try:
            lookups = found[0].enrich
            if lookups:
                event = await self.enricher.enrich(lookups, event, call.observer)
            status_code = await self._dispatch(spec, call, event)
        except LookupFailed as exc:
            failure = Failure(str(exc), "permanent" if exc.permanent else "transient")
        except ActionFailed as exc:
            failure = Failure(exc.message, exc.kind, exc.retry_after_s, exc.status_code)
        except TemplateFailed as exc:
            failure = Failure(str(exc), "permanent")
        except Exception as exc:
            if isinstance(spec, WebhookSpec | SlackSpec | EmailSpec):
                # Their own failures are ActionFailed with secrets redacted; an unexpected
                # exception's text may quote a URL or a credential, so only its type is kept.
                log.error("%s action of %s raised %s", kind, call.observer, type(exc).__name__)
                failure = Failure(f"{kind} action raised {type(exc).__name__}", "transient")
            else:
                log.exception("%s action of %s raised", kind, call.observer)
                failure = Failure(f"{kind} action raised {type(exc).__name__}: {exc}", "transient")
        duration, executed = self._metrics(call.observer, kind)
        duration.observe(time.perf_counter() - started)
        executed.inc()
        if failure is not None:
            metrics.actions_failed.labels(call.observer, kind, failure.kind).inc()
            return failure
        return Delivered(status_code)

    def _metrics(self, observer: str, kind: str) -> tuple[Histogram, Counter]:
        """The labelled children for ``observer``'s ``kind`` actions, looked up once (labels()
        is costly per job). Observers come from the config, so the label set stays bounded."""
        key = (observer, kind)
        found = self._children.get(key)
        if found is None:
            found = (
                metrics.action_duration.labels(observer, kind),
                metrics.actions_executed.labels(observer, kind),
            )
            self._children[key] = found
        return found

    async def _dispatch(self, spec: ActionSpec, call: ActionCall, event: Event) -> int | None:
        """Run the action; the HTTP status it got, for those that send a request."""
        if isinstance(spec, PythonSpec):  # first: the hot path of the benchmarks
            await call_handler(spec, event, self.threads, call.run_key)
            return None
        context = _context(event, call)
        if isinstance(spec, WebhookSpec):
            return await send_webhook(self.http, spec, context, call.idempotency_key)
        if isinstance(spec, SlackSpec):
            return await send_slack(self.http, spec, context)
        if isinstance(spec, EmailSpec):
            await send_email(spec, context, call.idempotency_key)
        elif isinstance(spec, DatabaseSpec):
            await call_function(self.pool, spec, context["event"])
        elif isinstance(spec, LogSpec):
            message = (
                spec.message.render(context)
                if spec.message
                else (f"{call.observer}: {event.entity_type} {event.entity_id} {event.event_type}")
            )
            log.log(logging.getLevelName(spec.level.upper()), "%s", message)
        elif isinstance(spec, CacheSpec):
            await invalidate(self.cache, spec, context)
        else:
            assert_never(spec)
        return None


def _context(event: Event, call: ActionCall) -> dict[str, Any]:
    """What templates see: the envelope's fields at the top, and ``event`` for the whole."""
    envelope = event.envelope()
    envelope["observer"] = call.observer
    return {**envelope, "event": envelope, "attempt": call.attempt, "enrich": event.enrich or {}}
