"""A parsed query as a WHERE clause over ``pgobs.trail_records`` (alias ``t``), with its
parameters.

Field matches go to the GIN index on ``terms`` ('field=value'), full text to the tsvector,
``data.<path>`` matches to the GIN index on ``data`` (containment), time ranges to the BRIN on
``at`` and partition pruning. Every leaf is true or false, never NULL, so NOT keeps records that
lack the field (as Lucene does).

A row of trail_records is a stored record, or one job of a batch record (0014). The clause is
two: which stored records may hold a match (on their own columns, so the trail's indexes answer
it: a batch record's terms hold every job's) and which rows match exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, assert_never

from psycopg import sql

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
from pgobs.search.fields import FIELDS, FieldKind

__all__ = ["TERM_FIELDS", "data_candidates", "like_pattern", "term_value", "to_sql"]

# Fields whose field:value is answered by the terms index (pgobs.trail_terms in 0008).
TERM_FIELDS = frozenset(
    {
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
        "event_id",
        "job_id",
        "attempt",
        "status_code",
    }
)
_COLUMNS = {"timestamp": "at"}
MAX_EXPONENT = 1000  # a number spelled past this is matched as text only


def to_sql(node: Node) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause and its named parameters (p0, p1, ...)."""
    params: dict[str, Any] = {}
    records = _records(node, params)
    return sql.SQL("{} AND {}").format(records, _node(node, params)), params


def _records(node: Node, params: dict[str, Any]) -> sql.Composable:
    """True for every stored record that may hold a row matching ``node`` (more is fine):
    indexed tests on the record's own columns, and true where a test needs the row."""
    if isinstance(node, And | Or):
        joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
        return sql.SQL("({})").format(joiner.join(_records(item, params) for item in node.items))
    if isinstance(node, Match) and node.field in TERM_FIELDS:
        return _terms(node, params, sql.SQL("t.record_terms"))
    if isinstance(node, Text | DataMatch) or (
        isinstance(node, Range) and node.field == "timestamp"
    ):
        return _node(node, params)  # the record's own search, data and time: every row's
    return sql.SQL("true")  # NOT, and tests of a row's own values


def term_value(value: str | Decimal) -> str:
    """How a value is spelled in ``terms``: whole numbers without a fraction (3, not 3.0)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and abs(value.adjusted()) <= MAX_EXPONENT:
            return str(int(value))
        return str(value)
    return value


def like_pattern(pattern: Pattern) -> str:
    out = []
    for part in pattern:
        if part is STAR:
            out.append("%")
        elif part is ONE:
            out.append("_")
        else:
            assert isinstance(part, str)
            out.append(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
    return "".join(out)


def data_candidates(path: tuple[str, ...], value: str) -> list[Any]:
    """The JSON values ``data.<path>:value`` matches: the string, and the number or boolean it
    spells."""
    found: list[Any] = [value]
    if value in ("true", "false"):
        found.append(value == "true")
    else:
        try:
            number = Decimal(value)
        except ArithmeticError:
            number = None
        if number is not None and number.is_finite() and abs(number.adjusted()) <= MAX_EXPONENT:
            found.append(number)
    return found


def _nest(path: tuple[str, ...], value: Any) -> str:
    text = _json(value)
    for key in reversed(path):
        text = "{" + json.dumps(key) + ": " + text + "}"
    return text


def _json(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value)


def _column(field: str) -> sql.Composable:
    return sql.SQL("t.") + sql.Identifier(_COLUMNS.get(field, field))


def _param(params: dict[str, Any], value: Any) -> sql.Composable:
    name = f"p{len(params)}"
    params[name] = value
    return sql.Placeholder(name)


def _node(node: Node, params: dict[str, Any]) -> sql.Composable:
    if isinstance(node, And | Or):
        joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
        return sql.SQL("({})").format(joiner.join(_node(item, params) for item in node.items))
    if isinstance(node, Not):
        return sql.SQL("(NOT {})").format(_node(node.item, params))
    if isinstance(node, All):
        return sql.SQL("true")
    if isinstance(node, Match):
        return _match(node, params)
    if isinstance(node, Like):
        pattern = _param(params, like_pattern(node.pattern))
        return _on_field(node.field, lambda value: sql.SQL("{} LIKE {}").format(value, pattern))
    if isinstance(node, Range):
        return _range(node, params)
    if isinstance(node, Text):
        return _text(node, params)
    if isinstance(node, DataMatch):
        # the value itself, or an array holding it (containment: the GIN index on data)
        candidates = data_candidates(node.path, node.value)
        docs = [_nest(node.path, c) for c in candidates]
        docs += [_nest(node.path, [c]) for c in candidates]
        return sql.SQL("(t.data @> ANY({}::jsonb[]))").format(_param(params, docs))
    if isinstance(node, DataLike):
        return sql.SQL(
            "EXISTS (SELECT FROM {values} AS v(x) WHERE jsonb_typeof(v.x) = 'string' "
            "AND (v.x #>> '{{}}') LIKE {pattern})"
        ).format(
            values=_values(node.path, params), pattern=_param(params, like_pattern(node.pattern))
        )
    if isinstance(node, DataRange):
        return _data_range(node, params)
    assert_never(node)


def _match(node: Match, params: dict[str, Any]) -> sql.Composable:
    if node.field in TERM_FIELDS:
        return _terms(node, params, sql.SQL("t.terms"))
    values = _param(params, list(node.values))
    return sql.SQL("coalesce({} = ANY({}), false)").format(_column(node.field), values)


def _terms(node: Match, params: dict[str, Any], column: sql.Composable) -> sql.Composable:
    terms = [f"{node.field}={term_value(v)}" for v in node.values]
    return sql.SQL("({} && {}::text[])").format(column, _param(params, terms))


def _on_field(field: str, test: Callable[[sql.Composable], sql.Composable]) -> sql.Composable:
    """``test`` of the field's value, true when any of an event's matched observers passes it
    too; never NULL."""
    if field == "observer":
        return sql.SQL(
            "coalesce({} OR EXISTS (SELECT FROM unnest(t.observers) AS o WHERE {}), false)"
        ).format(test(sql.SQL("t.observer")), test(sql.SQL("o")))
    return sql.SQL("coalesce({}, false)").format(test(_column(field)))


def _bound(field: str, value: Value, params: dict[str, Any]) -> sql.Composable:
    if isinstance(value, Relative):
        return sql.SQL("(now() + make_interval(secs => {}))").format(_param(params, value.seconds))
    if isinstance(value, Instant):
        return sql.SQL("{}::timestamptz").format(_param(params, value.at))
    if FIELDS[field].kind is FieldKind.KEYWORD:
        return sql.SQL('({}::text COLLATE "C")').format(_param(params, value))
    return _param(params, value)


def _range(node: Range, params: dict[str, Any]) -> sql.Composable:
    if node.low is None and node.high is None:
        return _on_field(node.field, lambda value: sql.SQL("{} IS NOT NULL").format(value))
    tests = []
    if node.low is not None:
        op = sql.SQL(">=" if node.low_inclusive else ">")
        tests.append(sql.SQL("{} {}").format(op, _bound(node.field, node.low, params)))
    if node.high is not None:
        op = sql.SQL("<=" if node.high_inclusive else "<")
        tests.append(sql.SQL("{} {}").format(op, _bound(node.field, node.high, params)))
    if node.field == "timestamp":
        # at is never NULL: a bare comparison, which the BRIN and partition pruning can use.
        return sql.SQL("({})").format(
            sql.SQL(" AND ").join(sql.SQL("t.at {}").format(test) for test in tests)
        )
    # Text compares byte by byte, as Elasticsearch compares keywords.
    collate = sql.SQL(' COLLATE "C" ' if FIELDS[node.field].kind is FieldKind.KEYWORD else " ")

    def within(value: sql.Composable) -> sql.Composable:
        return sql.SQL(" AND ").join(sql.Composed([value, collate, test]) for test in tests)

    return _on_field(node.field, within)


def _values(path: tuple[str, ...], params: dict[str, Any]) -> sql.Composable:
    """The values at ``path``: an array's elements, or the value alone."""
    return sql.SQL(
        "jsonb_array_elements(CASE jsonb_typeof(t.data #> {p}) WHEN 'array' "
        "THEN t.data #> {p} ELSE jsonb_build_array(t.data #> {p}) END)"
    ).format(p=_param(params, list(path)))


def _data_range(node: DataRange, params: dict[str, Any]) -> sql.Composable:
    if node.low is None and node.high is None:
        # a value: a string, number or boolean there, or in an array or object there
        return sql.SQL(
            'coalesce(jsonb_path_exists(t.data #> {}, \'strict $.** ? (@.type() == "string" '
            '|| @.type() == "number" || @.type() == "boolean")\'), false)'
        ).format(_param(params, list(node.path)))
    numeric = isinstance(node.low, Decimal) or isinstance(node.high, Decimal)
    if numeric:
        kind, value = sql.SQL("'number'"), sql.SQL("(v.x)::numeric")
    else:
        kind, value = sql.SQL("'string'"), sql.SQL("((v.x #>> '{}') COLLATE \"C\")")
    tests = []
    if node.low is not None:
        op = ">=" if node.low_inclusive else ">"
        tests.append(sql.SQL("{} " + op + " {}").format(value, _param(params, node.low)))
    if node.high is not None:
        op = "<=" if node.high_inclusive else "<"
        tests.append(sql.SQL("{} " + op + " {}").format(value, _param(params, node.high)))
    return sql.SQL(
        "EXISTS (SELECT FROM {values} AS v(x) WHERE CASE WHEN jsonb_typeof(v.x) = {kind} "
        "THEN {tests} ELSE false END)"
    ).format(values=_values(node.path, params), kind=kind, tests=sql.SQL(" AND ").join(tests))


def _text(node: Text, params: dict[str, Any]) -> sql.Composable:
    query = node.words[0] + ":*" if node.mode == "prefix" else " <-> ".join(node.words)
    return sql.SQL("(t.search @@ to_tsquery('simple'::regconfig, {}))").format(
        _param(params, query)
    )
