"""``pgobs search``: every event and outcome in the trail, in one query language."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import Parameter

from pgobs.cli.session import Dsn
from pgobs.errors import BadOption

if TYPE_CHECKING:
    from pgobs.trail.records import Record

COLUMNS = ("TIME", "ENTITY", "EVENT", "OBSERVER", "ACTION", "STATUS", "MESSAGE")
ALL_TIME = timedelta(days=36_500)
ElasticsearchUrl = Annotated[
    str | None,
    Parameter(
        env_var="PGOBS_ELASTICSEARCH_URL",
        help="Elasticsearch, for --backend elasticsearch (credentials: "
        "PGOBS_ELASTICSEARCH_API_KEY, or PGOBS_ELASTICSEARCH_USERNAME and _PASSWORD).",
    ),
]


def search(
    query: str,
    *,
    since: Annotated[str, Parameter(help="How far back: 15m, 24h, 7d, or all.")] = "24h",
    limit: int = 50,
    json: bool = False,
    backend: Literal["postgres", "elasticsearch"] = "postgres",
    elasticsearch_url: ElasticsearchUrl = None,
    dsn: Dsn = None,
) -> int:
    """Search the trail: every event and every action outcome, newest first.

    entity_type:Order AND event_kind:created AND timestamp:[now-1d TO now] ·
    status:failed AND action_type:webhook · entity_id:42 · data.customer.id:7 · "timed out"

    Parameters
    ----------
    query
        Lucene-style: field:value, "phrases", * wildcards, AND OR NOT ( ), ranges [a TO b] and
        {a TO b}, now-1d; bare words search the whole record (README, Search).
    limit
        Most records shown.
    json
        One JSON object per line instead of a table.
    backend
        Where to search: the trail in Postgres, or its copy in Elasticsearch.
    """
    from pgobs.search import parse

    if not 1 <= limit <= 10_000:
        raise BadOption(f"--limit must be between 1 and 10000, got {limit}")
    window = _since(since)
    node = parse(query)
    if backend == "elasticsearch":
        from pgobs.trail.elastic import search_elasticsearch

        records = search_elasticsearch(_es_url(elasticsearch_url), node, window, limit)
    else:
        from pgobs.cli.session import with_connection
        from pgobs.trail.postgres import search_postgres

        records = with_connection(dsn, lambda conn: search_postgres(conn, node, window, limit))
    _show(records, json=json, since=since)
    return 0


def _since(text: str) -> timedelta:
    from pgobs.config.fields import parse_duration

    if text.strip().lower() == "all":
        return ALL_TIME
    seconds = parse_duration(text.strip())
    if seconds is None or seconds <= 0:
        raise BadOption(
            f"cannot read --since {text!r}", "give a duration such as 15m, 24h, 7d, or all"
        )
    return min(timedelta(seconds=seconds), ALL_TIME)


def _es_url(url: str | None) -> str:
    if not url:
        raise BadOption(
            "--backend elasticsearch needs a server",
            "give --elasticsearch-url or set PGOBS_ELASTICSEARCH_URL",
        )
    return url


def _show(records: list[Record], *, json: bool, since: str) -> None:
    if json:
        from pgobs import jsoncodec

        out = sys.stdout
        for record in records:
            out.write(jsoncodec.encode(record.as_json()).decode() + "\n")
        return
    if not records:
        scope = "" if since.strip().lower() == "all" else f" in the last {since}"
        print(f"no record matches{scope} (widen it with --since, e.g. --since 7d or all)")
        return
    rows = [_row(r) for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS[:-1])]
    widths = [min(w, 32) for w in widths]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=False)) + "  " + COLUMNS[-1])
    for row in rows:
        cells = [cell[:w].ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join(cells) + "  " + row[-1])


def _row(r: Record) -> list[str]:
    entity = f"{r.entity_type or '?'} {r.entity_id or ''}".strip()
    action = r.action or r.action_type or ""
    details = []
    if r.attempt is not None and r.kind == "action":
        details.append(f"attempt {r.attempt}")
    if r.status_code is not None:
        details.append(f"HTTP {r.status_code}")
    if r.duration_ms is not None:
        details.append(f"{r.duration_ms:.0f} ms")
    if r.next_run_at is not None:
        details.append(f"next run {r.next_run_at:%H:%M:%S}")
    message = (r.message or "").replace("\n", " ")
    if details:
        message = f"[{', '.join(details)}] {message}".rstrip()
    return [
        f"{r.at:%Y-%m-%d %H:%M:%S}",
        entity,
        r.event_type or "",
        ",".join(r.observers),
        action,
        r.status,
        message[:160],
    ]
