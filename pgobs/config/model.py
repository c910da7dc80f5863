"""The validated configuration: observers, their actions and retry policies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pgobs.config.circuit import CircuitPolicy
from pgobs.events import Event

if TYPE_CHECKING:
    from pgobs.actions.specs import ActionSpec
    from pgobs.reliability.specs import DedupPolicy, Lookup

BackoffStrategy = Literal["exponential", "linear", "fixed"]
OnFailure = Literal["dlq", "log"]

EVENT_TYPE_ALIASES = {
    "insert": "INSERT",
    "created": "INSERT",
    "create": "INSERT",
    "update": "UPDATE",
    "updated": "UPDATE",
    "delete": "DELETE",
    "deleted": "DELETE",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_delay_ms: int = 100
    max_delay_ms: int = 30_000
    backoff_strategy: BackoffStrategy = "exponential"
    jitter: bool = True
    # A server's Retry-After is honoured beyond max_delay_ms (it knows when it will be ready),
    # up to this cap so a hostile or broken header cannot park a job for days.
    max_retry_after_ms: int = 3_600_000


@dataclass(frozen=True, slots=True)
class Observer:
    name: str
    entity: str  # an entity_type, or "*"
    event_types: frozenset[str] | None  # None: every event type
    condition_source: str | None
    condition: Callable[[Event], bool] | None
    actions: tuple[ActionSpec, ...]
    action_names: tuple[str, ...]  # each action's identity, in the order of ``actions``
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: OnFailure = "dlq"
    priority: int = 0
    max_concurrency: int | None = None  # runners of one worker it may fill; None: the default
    line: int = 0
    dedup: DedupPolicy | None = None  # fire once per fingerprint within a window
    enrich: tuple[Lookup, ...] = ()  # lookups run before the actions, as ``enrich.<name>``
    circuits: tuple[CircuitPolicy, ...] = ()  # each action's breaker settings, as ``actions``

    def action(self, name: str) -> ActionSpec | None:
        """The action called ``name``; ``#n`` is the n-th (jobs written before actions had
        names)."""
        if name.startswith("#"):
            index = int(name[1:]) if name[1:].isdigit() else len(self.actions)
            return self.actions[index] if index < len(self.actions) else None
        for known, spec in zip(self.action_names, self.actions, strict=True):
            if known == name:
                return spec
        return None

    def action_keys(self) -> list[str]:
        """``observer/action`` for every action, as jobs are claimed by."""
        return [f"{self.name}/{name}" for name in self.action_names] + [
            f"{self.name}/#{i}" for i in range(len(self.actions))
        ]

    def matches(self, event: Event) -> bool:
        """Whether ``event`` triggers this observer (entity and type are checked by the index)."""
        return self.condition is None or self.condition(event)


@dataclass(frozen=True, slots=True)
class Config:
    observers: tuple[Observer, ...]
    source: str = "<memory>"

    def observer(self, name: str) -> Observer | None:
        for obs in self.observers:
            if obs.name == name:
                return obs
        return None
