"""A small interpreter of the Elasticsearch query DSL that pgobs.search.to_es emits, over
documents as the shipper builds them, with the template's mappings: enough to check, without a
server, that the translation means what the reference evaluator means."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NUMERIC = {"id", "event_id", "job_id", "attempt", "status_code", "duration_ms"}


def matches(query: dict[str, Any], doc: dict[str, Any], now: datetime) -> bool:
    ((kind, body),) = query.items()
    if kind == "bool":
        ok = all(matches(q, doc, now) for q in body.get("filter", []))
        ok = ok and not any(matches(q, doc, now) for q in body.get("must_not", []))
        if "should" in body:
            ok = ok and sum(matches(q, doc, now) for q in body["should"]) >= body.get(
                "minimum_should_match", 1
            )
        return ok
    if kind == "match_all":
        return True
    ((field, spec),) = body.items()
    found = _values(doc, field)
    if kind == "terms":
        return any(_same(v, want, field) for v in found for want in spec)
    if kind == "wildcard":
        return any(isinstance(v, str) and _wild(spec["value"], v) for v in found)
    if kind == "exists":  # on an object: any value beneath it
        return _exists(doc, spec)
    if kind == "range":
        return any(_in_range(v, spec, field, now) for v in found)
    if kind == "match":
        if field == "text":
            tokens = doc.get("text", "").split()
            return any(w in tokens for w in spec["query"].split())
        return any(_lenient_equal(v, spec["query"]) for v in found)
    if kind == "match_phrase":
        tokens, want = doc.get("text", "").split(), spec["query"].split()
        return any(tokens[i : i + len(want)] == want for i in range(len(tokens) - len(want) + 1))
    if kind == "prefix":
        return any(t.startswith(spec["value"]) for t in doc.get("text", "").split())
    raise AssertionError(f"the interpreter does not know {kind}")


def _values(doc: dict[str, Any], field: str) -> list[Any]:
    value: Any = doc
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return []
        value = value[key]
    if value is None or isinstance(value, dict):
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def _exists(doc: dict[str, Any], field: str) -> bool:
    value: Any = doc
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return _has_value(value)


def _has_value(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_value(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_value(v) for v in value)
    return value is not None


def _same(value: Any, want: Any, field: str) -> bool:
    if field in NUMERIC:
        return Decimal(str(value)) == Decimal(str(want))
    return value == want


def _wild(pattern: str, value: str) -> bool:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


def _date(value: str, now: datetime) -> datetime:
    if value.startswith("now"):
        rest = value[3:]
        if not rest:
            return now
        amount, unit = int(rest[:-1]), rest[-1]
        return now + timedelta(seconds=amount * _UNITS[unit])
    return datetime.fromisoformat(value)


def _in_range(value: Any, spec: dict[str, Any], field: str, now: datetime) -> bool:
    if isinstance(value, bool):
        return False
    for op, bound in spec.items():
        if field in ("timestamp", "next_run_at"):
            left, right = datetime.fromisoformat(value), _date(bound, now)
        elif isinstance(bound, int | float) or field in NUMERIC:
            # a numeric range on a keyword field would compare text in Elasticsearch; data
            # paths holding numbers are doubles, and strings never meet numeric bounds here
            if not isinstance(value, int | float):
                return False
            left, right = Decimal(str(value)), Decimal(str(bound))
        else:
            if not isinstance(value, str):
                return False
            left, right = value, bound
        ok = {"gte": left >= right, "gt": left > right, "lte": left <= right, "lt": left < right}
        if not ok[op]:
            return False
    return True


def _lenient_equal(value: Any, query: Any) -> bool:
    """match with lenient: true on a keyword, double or boolean field (the value's type)."""
    if isinstance(value, bool):
        return str(query).lower() == ("true" if value else "false")
    if isinstance(value, int | float):
        try:
            return Decimal(str(query)) == Decimal(str(value))
        except ArithmeticError:
            return False
    if isinstance(value, str):
        return value == (("true" if query else "false") if isinstance(query, bool) else str(query))
    return False
