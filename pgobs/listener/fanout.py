"""Which observers an event meets, and the jobs that follows: pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgobs.actions.specs import action_type
from pgobs.config.model import Config, Observer
from pgobs.events import DATA_ERROR_KEY, Event


class ObserverIndex:
    """Observers by (entity_type, event_type), so each event only meets those that can match."""

    def __init__(self, config: Config) -> None:
        self._observers = config.observers
        self._by_key: dict[tuple[str, str], tuple[Observer, ...]] = {}

    def candidates(self, entity_type: str, event_type: str) -> tuple[Observer, ...]:
        key = (entity_type, event_type)
        found = self._by_key.get(key)
        if found is None:
            found = tuple(
                obs
                for obs in self._observers
                if obs.entity in ("*", entity_type)
                and (obs.event_types is None or event_type in obs.event_types)
            )
            self._by_key[key] = found
        return found


# A job row as COPY writes it: event_id, observer, action_index, action_type, priority, max_attempts
JobRow = tuple[int, str, int, str, int, int]


@dataclass
class FanoutPlan:
    jobs: list[JobRow] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


def plan_fanout(events: list[Event], index: ObserverIndex) -> FanoutPlan:
    """One job per matched action. An observer that raises on an event is audited, not fatal."""
    plan = FanoutPlan()
    jobs = plan.jobs
    for event in events:
        if isinstance(event.data, dict) and DATA_ERROR_KEY in event.data:
            plan.audit.append(
                observer_error(event, None, f"event data unavailable: {event.data[DATA_ERROR_KEY]}")
            )
        for obs in index.candidates(event.entity_type, event.event_type):
            try:
                matched = obs.matches(event)
            except Exception as exc:  # conditions never raise by contract; this guards the pipeline
                plan.audit.append(observer_error(event, obs, f"condition failed: {exc!r}"))
                continue
            if matched:
                for position, spec in enumerate(obs.actions):
                    jobs.append(
                        (
                            event.id,
                            obs.name,
                            position,
                            action_type(spec),
                            obs.priority,
                            obs.retry.max_attempts,
                        )
                    )
    return plan


def observer_error(event: Event, obs: Observer | None, message: str) -> dict[str, Any]:
    return {
        "kind": "event",
        "status": "error",
        "event_id": event.id,
        "observer": obs.name if obs else None,
        "action_type": None,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "event_type": event.event_type,
        "message": message,
        "details": None,
    }
