"""The event: one captured row change (or a custom event), as observers see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Set in data/old_data when a row could not be captured or decoded; its value says why.
DATA_ERROR_KEY = "_pgobs_error"


@dataclass(slots=True)
class Event:
    """A row of ``pgobs.events``.

    ``data`` is the new row (or the custom payload), ``old_data`` the row before an UPDATE or
    DELETE. Both are plain JSON values decoded from jsonb with exact numbers: an integer is an
    ``int`` of any size, any other number a ``decimal.Decimal`` with the digits Postgres wrote
    (``Decimal('250.00')``), never a float, so money keeps its value (pgobs.jsoncodec).
    """

    id: int
    entity_type: str
    event_type: str
    data: dict[str, Any] | None
    entity_id: str | None = None
    old_data: dict[str, Any] | None = None
    changed_fields: list[str] | None = None
    tenant: str | None = None
    actor: str | None = None
    created_at: datetime | None = None
    txid: int = 0
    # Given to pgobs.emit by the application; an observer's dedup uses it when present.
    idempotency_key: str | None = None
    # The observer's enrichment lookups by name, filled in by the worker before the actions run.
    enrich: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, event_id: int, doc: dict[str, Any]) -> Event:
        """An event from its JSON copy: a retried dead letter's payload (``to_jsonb`` of the
        events row), kept so a retry works after the event itself was purged."""
        created = doc.get("created_at")
        return cls(
            id=event_id,
            entity_type=doc["entity_type"],
            entity_id=doc.get("entity_id"),
            event_type=doc.get("event_type", ""),
            data=doc.get("data"),
            old_data=doc.get("old_data"),
            changed_fields=doc.get("changed_fields"),
            tenant=doc.get("tenant"),
            actor=doc.get("actor"),
            created_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
        )

    def envelope(self) -> dict[str, Any]:
        """The JSON envelope actions send and templates see (DESIGN.md, webhook request)."""
        return {
            "event_id": self.id,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "event_type": self.event_type,
            "data": self.data,
            "old_data": self.old_data,
            "changes": self.changed_fields,
            "tenant": self.tenant,
            "actor": self.actor,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
