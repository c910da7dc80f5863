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


AUDIT_COLUMNS = (
    "audit_event_ids",
    "audit_observers",
    "audit_entity_types",
    "audit_entity_ids",
    "audit_event_types",
    "audit_messages",
)


@dataclass
class FanoutPlan:
    """One batch's writes, column by column, as the fan_out statement takes them."""

    event_ids: list[int] = field(default_factory=list)
    observers: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    action_indexes: list[int] = field(default_factory=list)
    action_types: list[str] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    max_attempts: list[int] = field(default_factory=list)
    audit: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in AUDIT_COLUMNS}
    )

    def add_audit(self, event: Event, obs: Observer | None, message: str) -> None:
        values = (
            event.id,
            obs.name if obs else None,
            event.entity_type,
            event.entity_id,
            event.event_type,
            message.replace("\x00", "\\0"),  # Postgres text cannot hold NUL
        )
        for name, value in zip(AUDIT_COLUMNS, values, strict=True):
            self.audit[name].append(value)

    def params(self) -> dict[str, Any]:
        return {
            "event_ids": self.event_ids,
            "observers": self.observers,
            "actions": self.actions,
            "action_indexes": self.action_indexes,
            "action_types": self.action_types,
            "priorities": self.priorities,
            "max_attempts": self.max_attempts,
            **self.audit,
            "notify": bool(self.event_ids),
        }


def plan_fanout(events: list[Event], index: ObserverIndex) -> FanoutPlan:
    """One job per matched action. An observer that raises on an event is audited, not fatal."""
    plan = FanoutPlan()
    for event in events:
        if isinstance(event.data, dict) and DATA_ERROR_KEY in event.data:
            plan.add_audit(event, None, f"event data unavailable: {event.data[DATA_ERROR_KEY]}")
        for obs in index.candidates(event.entity_type, event.event_type):
            try:
                matched = obs.matches(event)
            except Exception as exc:  # conditions never raise by contract; this guards the pipeline
                plan.add_audit(event, obs, f"condition failed: {exc!r}")
                continue
            if matched:
                for position, (name, spec) in enumerate(
                    zip(obs.action_names, obs.actions, strict=True)
                ):
                    plan.event_ids.append(event.id)
                    plan.observers.append(obs.name)
                    plan.actions.append(name)
                    plan.action_indexes.append(position)
                    plan.action_types.append(action_type(spec))
                    plan.priorities.append(obs.priority)
                    plan.max_attempts.append(obs.retry.max_attempts)
    return plan
