"""A slow, obvious reading of the search language over in-memory trail records: what both
backends must answer (tests compare Postgres and the Elasticsearch DSL to it)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pgobs.search.ast import (
    ONE,
    STAR,
    All,
    And,
    DataLike,
    DataMatch,
    DataRange,
    Instant,
    Like,
    Match,
    Node,
    Not,
    Or,
    Pattern,
    Range,
    Relative,
    Text,
)

NUMBER = re.compile(r"-?\d+(\.\d+)?")


def evaluate(node: Node, rec: dict[str, Any], now: datetime) -> bool:
    if isinstance(node, And):
        return all(evaluate(n, rec, now) for n in node.items)
    if isinstance(node, Or):
        return any(evaluate(n, rec, now) for n in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, rec, now)
    if isinstance(node, All):
        return True
    if isinstance(node, Match):
        return any(_equal(v, want) for v in values(rec, node.field) for want in node.values)
    if isinstance(node, Like):
        return any(isinstance(v, str) and wild(node.pattern, v) for v in values(rec, node.field))
    if isinstance(node, Range):
        found = values(rec, node.field)
        if node.low is None and node.high is None:
            return bool(found)
        return any(_within(v, node, now) for v in found)
    if isinstance(node, Text):
        return text_match(node, words(rec))
    if isinstance(node, DataMatch | DataLike | DataRange):
        return _data(node, rec)
    raise AssertionError(node)


def values(rec: dict[str, Any], field: str) -> list[Any]:
    if field == "observer":
        return [v for v in [rec.get("observer"), *(rec.get("observers") or [])] if v is not None]
    if field == "timestamp":
        return [rec["at"]]
    value = rec.get(field)
    return [] if value is None else [value]


def _equal(value: Any, want: str | Decimal) -> bool:
    if isinstance(want, Decimal):
        return isinstance(value, int | float) and Decimal(str(value)) == want
    return value == want


def wild(pattern: Pattern, text: str) -> bool:
    regex = "".join(".*" if p is STAR else "." if p is ONE else re.escape(str(p)) for p in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _point(value: Any, now: datetime) -> Any:
    if isinstance(value, Relative):
        return now + timedelta(seconds=value.seconds)
    if isinstance(value, Instant):
        return value.at
    return value


def _within(value: Any, node: Range, now: datetime) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = Decimal(str(value))
    low, high = _point(node.low, now), _point(node.high, now)
    if low is not None and not (value >= low if node.low_inclusive else value > low):
        return False
    return high is None or (value <= high if node.high_inclusive else value < high)


def _at(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _has_value(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_value(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_value(v) for v in value)
    return value is not None


def _data(node: DataMatch | DataLike | DataRange, rec: dict[str, Any]) -> bool:
    """An array at the path matches when one of its elements does."""
    present, value = _at(rec.get("data") or {}, node.path)
    if not present or value is None:
        return False
    if isinstance(node, DataRange) and node.low is None and node.high is None:
        return _has_value(value)
    if isinstance(value, list):
        return any(_data_value(node, v) for v in value)
    return _data_value(node, value)


def _data_value(node: DataMatch | DataLike | DataRange, value: Any) -> bool:
    if isinstance(node, DataMatch):
        if isinstance(value, bool):
            return node.value == ("true" if value else "false")
        if isinstance(value, str):
            return value == node.value
        if isinstance(value, int | float):
            return NUMBER.fullmatch(node.value) is not None and Decimal(node.value) == Decimal(
                str(value)
            )
        return False
    if isinstance(node, DataLike):
        return isinstance(value, str) and wild(node.pattern, value)
    numeric = isinstance(node.low, Decimal) or isinstance(node.high, Decimal)
    if numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        value = Decimal(str(value))
    elif not isinstance(value, str):
        return False
    if node.low is not None and not (value >= node.low if node.low_inclusive else value > node.low):
        return False
    return node.high is None or (value <= node.high if node.high_inclusive else value < node.high)


def _json_key(key: str) -> tuple[int, bytes]:
    raw = key.encode()
    return len(raw), raw


def data_values(data: Any) -> list[str]:
    """Strings and numbers of ``data`` in the order jsonb_path_query('strict $.**') gives."""
    found: list[str] = []
    if isinstance(data, dict):
        for key in sorted(data, key=_json_key):
            found.extend(data_values(data[key]))
    elif isinstance(data, list):
        for item in data:
            found.extend(data_values(item))
    elif isinstance(data, str):
        found.append(data)
    elif isinstance(data, int | float) and not isinstance(data, bool):
        found.append(str(data))
    return found


def text(rec: dict[str, Any]) -> str:
    """What pgobs.trail_text gives for the record."""
    parts: list[str] = [rec["message"]] if rec.get("message") is not None else []
    parts.extend(data_values(rec.get("data") or {}))
    return " ".join(re.findall(r"[^\W_]+", " ".join(parts).lower()))


def words(rec: dict[str, Any]) -> list[str]:
    return text(rec).split()


def text_match(node: Text, tokens: list[str]) -> bool:
    if node.mode == "prefix":
        return any(t.startswith(node.words[0]) for t in tokens)
    n = len(node.words)
    return any(tuple(tokens[i : i + n]) == node.words for i in range(len(tokens) - n + 1))
