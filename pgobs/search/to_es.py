"""A parsed query as Elasticsearch query DSL, with the semantics of ``to_sql``.

Documents are the trail's records as the shipper sends them (``pgobs.trail.documents``): the
keyword fields as keywords, ``observer`` a list (an event's matched observers), ``timestamp``,
``data`` with strings as keywords and numbers as doubles, and ``text``, the words full text
sees, already normalized (pgobs.trail_text), under a whitespace analyzer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, assert_never

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
    Value,
)
from pgobs.search.to_sql import data_candidates, term_value

__all__ = ["to_es", "wildcard"]


def to_es(node: Node) -> dict[str, Any]:
    if isinstance(node, And):
        return {"bool": {"filter": [to_es(item) for item in node.items]}}
    if isinstance(node, Or):
        return {"bool": {"should": [to_es(item) for item in node.items], "minimum_should_match": 1}}
    if isinstance(node, Not):
        return {"bool": {"must_not": [to_es(node.item)]}}
    if isinstance(node, All):
        return {"match_all": {}}
    if isinstance(node, Match):
        return {"terms": {node.field: [_value(v) for v in node.values]}}
    if isinstance(node, Like):
        return {"wildcard": {node.field: {"value": wildcard(node.pattern)}}}
    if isinstance(node, Range):
        if node.low is None and node.high is None:
            return {"exists": {"field": node.field}}
        return {"range": {node.field: _bounds(node.low, node.high, node)}}
    if isinstance(node, Text):
        words = " ".join(node.words)
        if node.mode == "prefix":
            return {"prefix": {"text": {"value": words}}}
        if node.mode == "phrase":
            return {"match_phrase": {"text": {"query": words}}}
        return {"match": {"text": {"query": words}}}
    if isinstance(node, DataMatch):
        field = _data_field(node.path)
        # match, lenient: the path may be mapped as a number, a keyword or a boolean; a value
        # that cannot be one of them matches nothing instead of failing the whole search.
        return {
            "bool": {
                "should": [
                    {"match": {field: {"query": _json_scalar(c), "lenient": True}}}
                    for c in data_candidates(node.path, node.value)
                ],
                "minimum_should_match": 1,
            }
        }
    if isinstance(node, DataLike):
        return {"wildcard": {_data_field(node.path): {"value": wildcard(node.pattern)}}}
    if isinstance(node, DataRange):
        field = _data_field(node.path)
        if node.low is None and node.high is None:
            return {"exists": {"field": field}}
        return {"range": {field: _bounds(node.low, node.high, node)}}
    assert_never(node)


def wildcard(pattern: Pattern) -> str:
    out = []
    for part in pattern:
        if part is STAR:
            out.append("*")
        elif part is ONE:
            out.append("?")
        else:
            assert isinstance(part, str)
            out.append(part.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))
    return "".join(out)


def _data_field(path: tuple[str, ...]) -> str:
    return "data." + ".".join(path)


def _value(value: str | Decimal) -> str | int | float:
    if isinstance(value, Decimal):
        spelled = term_value(value)
        return int(spelled) if spelled.lstrip("-").isdigit() else float(value)
    return value


def _json_scalar(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _value(value)
    return value


def _bound(value: Value | str | Decimal) -> Any:
    if isinstance(value, Relative):
        return value.es()
    if isinstance(value, Instant):
        return value.at.isoformat()
    if isinstance(value, Decimal):
        return _value(value)
    return value


def _bounds(
    low: Value | str | Decimal | None, high: Value | str | Decimal | None, node: Range | DataRange
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if low is not None:
        found["gte" if node.low_inclusive else "gt"] = _bound(low)
    if high is not None:
        found["lte" if node.high_inclusive else "lt"] = _bound(high)
    return found
