"""The fields a query may name: the event's envelope, the outcome, and ``data.<path>``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["EVENT_TYPE_ALIASES", "FIELDS", "STATUSES", "STATUS_GROUPS", "Field", "FieldKind"]


class FieldKind(enum.Enum):
    KEYWORD = "keyword"  # exact text; wildcards and (lexicographic) ranges
    NUMBER = "number"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # as stored (the column, and the document's field)
    kind: FieldKind
    doc: str


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("kind", FieldKind.KEYWORD, "event (one per event) or action (one per outcome)"),
        Field("status", FieldKind.KEYWORD, "what happened (see STATUSES)"),
        Field("entity_type", FieldKind.KEYWORD, "the event's entity type, e.g. Order"),
        Field("entity_id", FieldKind.KEYWORD, "the event's entity id"),
        Field("event_type", FieldKind.KEYWORD, "INSERT, UPDATE, DELETE or a custom name"),
        Field("tenant", FieldKind.KEYWORD, "the event's tenant"),
        Field("actor", FieldKind.KEYWORD, "the event's actor"),
        Field("observer", FieldKind.KEYWORD, "the observer (an event: any it matched)"),
        Field("action", FieldKind.KEYWORD, "the action's name within its observer"),
        Field("action_type", FieldKind.KEYWORD, "webhook, slack, email, database, python, ..."),
        Field("event_id", FieldKind.NUMBER, "the event's id"),
        Field("job_id", FieldKind.NUMBER, "the job's id"),
        Field("attempt", FieldKind.NUMBER, "the attempt an outcome ended"),
        Field("status_code", FieldKind.NUMBER, "the HTTP status an action got"),
        Field("duration_ms", FieldKind.NUMBER, "how long the attempt ran"),
        Field("timestamp", FieldKind.TIME, "when the record was written"),
    )
}
# Names accepted for others: the seed's event_kind, and Lucene's habit of @timestamp.
FIELD_ALIASES = {"event_kind": "event_type", "@timestamp": "timestamp"}

# Every status a record has.
STATUSES = (
    "received",  # an event no observer matched
    "matched",  # an event some observer matched (observer lists them)
    "error",  # an event an observer could not judge (its condition failed, its data unreadable)
    "delivered",
    "retried",  # an attempt failed and the job will run again
    "failed",  # dead-lettered
    "dropped",  # failed for good with on_failure: log
    "deduplicated",
    "deferred",  # held back by an open circuit
    "retried_from_dlq",  # an operator put the dead letter back in the queue
)
# Words that stand for several statuses: status:failed finds every failed attempt as well.
STATUS_GROUPS = {
    "failed": ("failed", "retried", "dropped"),
    "dead_lettered": ("failed",),
}
# event_type values by their config aliases (event_kind:created is event_type:INSERT).
EVENT_TYPE_ALIASES = {
    "created": "INSERT",
    "insert": "INSERT",
    "updated": "UPDATE",
    "update": "UPDATE",
    "deleted": "DELETE",
    "delete": "DELETE",
}
