"""The trail in Elasticsearch: its documents, index template and ILM policy, and searching it.

Documents have deterministic ids (the trail record's id, and a job's seq in a batch record:
``id-seq``) in a deterministic index (the day of the record, ``pgobs-trail-YYYY.MM.DD``), so
shipping a record again overwrites its document.
The ILM policy deletes an index 90 days (by default) after it was created.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio

from pgobs.errors import BadOption, ConnectionFailed, PgobsError
from pgobs.search import to_es
from pgobs.search.ast import Node
from pgobs.trail.records import Record

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch

__all__ = [
    "INDEX_PATTERN",
    "INDEX_TEMPLATE",
    "NEW_FIELDS",
    "POLICY",
    "client",
    "document",
    "index_for",
    "search_elasticsearch",
]

INDEX_PREFIX = "pgobs-trail-"
INDEX_PATTERN = INDEX_PREFIX + "*"
TEMPLATE_NAME = "pgobs-trail"
POLICY_NAME = "pgobs-trail"
SHIPPED_FIELDS = (
    "id",
    "seq",
    "kind",
    "status",
    "event_id",
    "job_id",
    "entity_type",
    "entity_id",
    "event_type",
    "tenant",
    "actor",
    "action",
    "action_type",
    "attempt",
    "status_code",
    "duration_ms",
    "message",
)
_KEYWORDS = (
    "kind",
    "status",
    "entity_type",
    "entity_id",
    "event_type",
    "tenant",
    "actor",
    "observer",
    "action",
    "action_type",
)


def policy(retention_days: int = 90) -> dict[str, Any]:
    return {"phases": {"delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}}}}


POLICY = policy()
NEW_FIELDS: dict[str, Any] = {"seq": {"type": "integer"}}  # fields added since 0008's template
INDEX_TEMPLATE: dict[str, Any] = {
    "index_patterns": [INDEX_PATTERN],
    "priority": 200,
    "template": {
        "settings": {"index.lifecycle.name": POLICY_NAME, "number_of_replicas": 0},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                **{name: {"type": "keyword"} for name in _KEYWORDS},
                "id": {"type": "long"},
                **NEW_FIELDS,
                "event_id": {"type": "long"},
                "job_id": {"type": "long"},
                "attempt": {"type": "integer"},
                "status_code": {"type": "integer"},
                "duration_ms": {"type": "double"},
                "timestamp": {"type": "date_nanos"},  # Postgres keeps microseconds
                "next_run_at": {"type": "date"},
                "message": {"type": "keyword", "index": False, "doc_values": False},
                # pgobs.trail_text: already lowercase words, split on spaces.
                "text": {"type": "text", "analyzer": "whitespace"},
                "data": {
                    "type": "object",
                    "dynamic": True,
                    "properties": {},
                },
            },
            # data.<path>: strings are keywords, numbers doubles, as to_es queries them.
            "dynamic_templates": [
                {
                    "data_strings": {
                        "path_match": "data.*",
                        "match_mapping_type": "string",
                        "mapping": {"type": "keyword", "ignore_above": 1024},
                    }
                },
                {
                    "data_longs": {
                        "path_match": "data.*",
                        "match_mapping_type": "long",
                        "mapping": {"type": "double"},
                    }
                },
                {
                    "data_doubles": {
                        "path_match": "data.*",
                        "match_mapping_type": "double",
                        "mapping": {"type": "double"},
                    }
                },
            ],
        },
    },
}


def index_for(at: datetime) -> str:
    """The day's index (UTC, as the trail's partitions)."""
    return _day_index(at.astimezone(UTC).date())


@lru_cache(maxsize=64)
def _day_index(day: date) -> str:
    return f"{INDEX_PREFIX}{day:%Y.%m.%d}"


def document(row: dict[str, Any]) -> dict[str, Any]:
    """One bulk action for a trail row (as trail_ship_batch reads it)."""
    source: dict[str, Any] = {}
    for name in SHIPPED_FIELDS:
        value = row[name]
        if value is not None:
            source[name] = value
    source["timestamp"] = row["at"].isoformat()
    if row["next_run_at"] is not None:
        source["next_run_at"] = row["next_run_at"].isoformat()
    observers = [row["observer"]] if row["observer"] is not None else list(row["observers"] or ())
    if observers:
        source["observer"] = observers
    data = _searchable(row["data"])
    if data:
        source["data"] = data
    if row["text"]:
        source["text"] = row["text"]
    return {"_index": index_for(row["at"]), "_id": document_id(row), "_source": source}


def document_id(row: dict[str, Any]) -> str:
    """A record's document id: its trail id, with the job's seq for a job of a batch record."""
    return f"{row['id']}-{row['seq']}" if row["seq"] else str(row["id"])


def _searchable(value: Any) -> Any:
    """``data`` as search reads it: objects, scalars and arrays of scalars; the objects and
    arrays inside an array are left out (Postgres does not look into them either)."""
    if isinstance(value, dict):
        return {key: _searchable(v) for key, v in value.items()}
    if isinstance(value, list):
        return [v for v in value if not isinstance(v, dict | list)]
    return value


def client(url: str) -> AsyncElasticsearch:
    """A client for ``url``; credentials from PGOBS_ELASTICSEARCH_API_KEY, or
    PGOBS_ELASTICSEARCH_USERNAME and PGOBS_ELASTICSEARCH_PASSWORD."""
    from elastic_transport import HttpxAsyncHttpNode
    from elasticsearch import AsyncElasticsearch

    api_key = os.environ.get("PGOBS_ELASTICSEARCH_API_KEY")
    user = os.environ.get("PGOBS_ELASTICSEARCH_USERNAME")
    password = os.environ.get("PGOBS_ELASTICSEARCH_PASSWORD", "")
    try:
        return AsyncElasticsearch(
            url,
            api_key=api_key or None,
            basic_auth=(user, password) if user and not api_key else None,
            node_class=HttpxAsyncHttpNode,  # httpx is pgobs' HTTP client already (no aiohttp)
            request_timeout=10,
            max_retries=1,
            retry_on_timeout=False,
        )
    except ValueError as exc:
        raise BadOption(
            f"cannot use the Elasticsearch URL {url!r}: {exc}",
            "give one like http://127.0.0.1:9200",
        ) from None


def search_body(node: Node, since: timedelta, limit: int) -> dict[str, Any]:
    window = {"range": {"timestamp": {"gte": f"now-{int(since.total_seconds())}s"}}}
    return {
        "query": {"bool": {"filter": [window, to_es(node)]}},
        "sort": [
            {"timestamp": "desc"},
            {"id": "desc"},
            {"seq": {"order": "desc", "unmapped_type": "integer"}},
        ],
        "size": limit,
    }


def search_elasticsearch(url: str, node: Node, since: timedelta, limit: int) -> list[Record]:
    body = search_body(node, since, limit)
    return anyio.run(lambda: _search(url, body))


async def _search(url: str, body: dict[str, Any]) -> list[Record]:
    from elastic_transport import ConnectionError as Unreachable
    from elastic_transport import ConnectionTimeout
    from elasticsearch import ApiError, NotFoundError

    es = client(url)
    try:
        answer = await es.search(index=INDEX_PATTERN, ignore_unavailable=True, **body)
    except (Unreachable, ConnectionTimeout) as exc:
        raise ConnectionFailed(
            f"Elasticsearch at {url} is unreachable ({type(exc).__name__})",
            "start it (docker compose up elasticsearch) or search Postgres: --backend postgres",
        ) from None
    except NotFoundError:
        return []
    except ApiError as exc:
        raise PgobsError(
            f"Elasticsearch at {url} refused the search: {exc.message}",
            "check the server and its credentials (PGOBS_ELASTICSEARCH_API_KEY)",
        ) from None
    finally:
        await es.close()
    return [_record(hit["_source"]) for hit in answer["hits"]["hits"]]


def _record(source: dict[str, Any]) -> Record:
    next_run = source.get("next_run_at")
    return Record(
        at=datetime.fromisoformat(source["timestamp"]),
        id=source["id"],
        seq=source.get("seq", 0),
        kind=source["kind"],
        status=source["status"],
        event_id=source.get("event_id"),
        job_id=source.get("job_id"),
        entity_type=source.get("entity_type"),
        entity_id=source.get("entity_id"),
        event_type=source.get("event_type"),
        tenant=source.get("tenant"),
        actor=source.get("actor"),
        observers=tuple(source.get("observer", ())),
        action=source.get("action"),
        action_type=source.get("action_type"),
        attempt=source.get("attempt"),
        status_code=source.get("status_code"),
        duration_ms=source.get("duration_ms"),
        next_run_at=datetime.fromisoformat(next_run) if next_run else None,
        message=source.get("message"),
    )
