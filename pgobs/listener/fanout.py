"""Which observers an event meets, and the jobs that follows: pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgobs.actions.specs import action_type
from pgobs.config.model import Config, Observer
from pgobs.events import DATA_ERROR_KEY, Event
from pgobs.reliability.dedup import Gate, Gates, fingerprint
from pgobs.reliability.specs import DedupPolicy
from pgobs.templates import TemplateFailed


class ObserverIndex:
    """Observers by (entity_type, event_type), so each event only meets those that can match;
    and every action numbered once (its ref), so a batch sends two numbers per job and the
    actions' columns once, not seven columns per job."""

    def __init__(self, config: Config) -> None:
        self._observers = config.observers
        self._by_key: dict[tuple[str, str], tuple[Observer, ...]] = {}
        self.refs: dict[str, tuple[int, ...]] = {}  # observer -> its actions' refs, in order
        self.catalog: dict[str, list[Any]] = {column: [] for column in CATALOG_COLUMNS}
        for obs in config.observers:
            first = len(self.catalog["observers"]) + 1  # refs count from 1, as ORDINALITY
            for position, (name, spec) in enumerate(
                zip(obs.action_names, obs.actions, strict=True)
            ):
                row = (obs.name, name, position, action_type(spec), obs.priority)
                for column, value in zip(
                    CATALOG_COLUMNS, (*row, obs.retry.max_attempts), strict=True
                ):
                    self.catalog[column].append(value)
            self.refs[obs.name] = tuple(range(first, first + len(obs.actions)))

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


CATALOG_COLUMNS = (
    "observers",
    "actions",
    "action_indexes",
    "action_types",
    "priorities",
    "max_attempts",
)
AUDIT_COLUMNS = (
    "audit_event_ids",
    "audit_observers",
    "audit_entity_types",
    "audit_entity_ids",
    "audit_event_types",
    "audit_messages",
)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A duplicate the fan-out statement did not write jobs for (a row it returns)."""

    event_id: int
    observer: str
    fingerprint: str


@dataclass
class FanoutPlan:
    """One batch's writes, column by column, as the fan_out statement takes them."""

    catalog: dict[str, list[Any]]
    event_ids: list[int] = field(default_factory=list)
    refs: list[int] = field(default_factory=list)  # each job's action, by its catalog ref
    gates: Gates = field(default_factory=Gates)  # the dedup checks of this batch
    job_gates: list[int] = field(default_factory=list)  # each job's gate (1-based), 0: none
    matched: dict[str, int] = field(default_factory=dict)  # observer -> jobs made for it
    events_matched: dict[str, int] = field(default_factory=dict)  # observer -> events it matched
    audit: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in AUDIT_COLUMNS}
    )
    skipped: list[Skipped] = field(default_factory=list)  # what the statement skipped
    _fingerprints: set[str] = field(default_factory=set)

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

    def add_gate(self, event: Event, obs: Observer, policy: DedupPolicy) -> int:
        """The gate of ``obs``'s jobs for ``event``: 'skip' at once when an earlier event of the
        batch has the same fingerprint."""
        try:
            fp = fingerprint(obs.name, policy, event)
        except TemplateFailed as exc:
            self.add_audit(event, obs, f"dedup key failed, deduplicated by the change: {exc}")
            fp = fingerprint(obs.name, DedupPolicy(policy.window_s), event)
        gate = Gate(fp, policy.window_s, event.id, obs.name)
        if fp in self._fingerprints:
            gate.mode = "skip"
        self._fingerprints.add(fp)
        self.gates.items.append(gate)
        return len(self.gates.items)

    def params(self) -> dict[str, Any]:
        return {
            "event_ids": self.event_ids,
            "refs": self.refs,
            "gates": self.job_gates,
            **self.gates.params(),
            **self.catalog,
            **self.audit,
            "notify": bool(self.event_ids),
        }


def plan_fanout(events: list[Event], index: ObserverIndex) -> FanoutPlan:
    """One job per matched action. An observer that raises on an event is audited, not fatal."""
    plan = FanoutPlan(index.catalog)
    refs = index.refs
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
                gate = 0 if obs.dedup is None else plan.add_gate(event, obs, obs.dedup)
                for ref in refs[obs.name]:
                    plan.event_ids.append(event.id)
                    plan.refs.append(ref)
                    plan.job_gates.append(gate)
                plan.matched[obs.name] = plan.matched.get(obs.name, 0) + len(refs[obs.name])
                plan.events_matched[obs.name] = plan.events_matched.get(obs.name, 0) + 1
    return plan
