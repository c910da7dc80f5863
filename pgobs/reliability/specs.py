"""What observers.yaml says about dedup and enrichment, as the config loads it: plain data, so
reading a config imports no driver, HTTP client or metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgobs.reliability.egress import DEFAULT_EGRESS, EgressPolicy
from pgobs.templates import Template

# %(name)s placeholders of a SQL lookup: each is the event's data field of that name, or an
# envelope field (entity_id, event_type, tenant, ...).
SQL_PARAMETER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class DedupPolicy:
    """An observer's ``dedup:``: fire once per fingerprint within ``window_s``."""

    window_s: float
    key: Template | None = None  # None: the idempotency key, else a hash of the change


@dataclass(frozen=True, slots=True)
class HttpLookup:
    url: Template
    headers: tuple[tuple[str, Template], ...] = ()
    egress: EgressPolicy = DEFAULT_EGRESS  # the file's egress: key, set by the loader


@dataclass(frozen=True, slots=True)
class SqlLookup:
    sql: str
    parameters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CacheRule:
    key: Template
    ttl_s: float
    local_ttl_s: float = 1.0  # how long a worker process keeps a value it read in memory


@dataclass(frozen=True, slots=True)
class Lookup:
    name: str
    source: HttpLookup | SqlLookup
    cache: CacheRule | None
    timeout_s: float
