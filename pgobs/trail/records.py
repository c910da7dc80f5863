"""One trail record as search returns it, from either backend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["RECORD_COLUMNS", "Record"]


@dataclass(frozen=True, slots=True)
class Record:
    at: datetime
    id: int  # the trail record's
    seq: int  # a job of a batch record (1, 2, ...), else 0
    kind: str
    status: str
    event_id: int | None
    job_id: int | None
    entity_type: str | None
    entity_id: str | None
    event_type: str | None
    tenant: str | None
    actor: str | None
    observers: tuple[str, ...]  # an outcome's observer, or every observer an event matched
    action: str | None
    action_type: str | None
    attempt: int | None
    status_code: int | None
    duration_ms: float | None
    next_run_at: datetime | None
    message: str | None

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {name: getattr(self, name) for name in RECORD_COLUMNS}
        found["timestamp"] = self.at.isoformat()
        del found["at"]
        found["observer"] = list(self.observers)
        del found["observers"]
        if self.next_run_at is not None:
            found["next_run_at"] = self.next_run_at.isoformat()
        return found


RECORD_COLUMNS = tuple(Record.__slots__)
