"""Conditions: the grammar, the value semantics, and the compiled code against a slow reference."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import pgobs.conditions
from pgobs.conditions import Condition, ConditionSyntaxError, compile_condition
from pgobs.conditions.compiler import _changed, _eq, _get, _has, _in, _le, _lt, _steps
from pgobs.conditions.parser import (
    ENVELOPE_FIELDS,
    MAX_NESTING,
    And,
    Compare,
    CompareOp,
    FieldChanged,
    FieldChangedFrom,
    FieldChangedTo,
    HasField,
    Literal,
    Node,
    Not,
    Or,
    Path,
    Root,
    parse,
)
from pgobs.errors import PgobsError
from pgobs.events import Event


def event(
    data: Any = None,
    old: Any = None,
    changed: list[str] | None = None,
    **envelope: Any,
) -> Event:
    fields: dict[str, Any] = {"id": 7, "entity_type": "Order", "event_type": "UPDATE"}
    fields.update(envelope)
    return Event(data=data, old_data=old, changed_fields=changed, **fields)


def test_public_names() -> None:
    assert sorted(pgobs.conditions.__all__) == [
        "Condition",
        "ConditionSyntaxError",
        "compile_condition",
    ]
    for name in pgobs.conditions.__all__:
        assert getattr(pgobs.conditions, name) is not None


def test_condition_attributes() -> None:
    source = (
        "status == 'paid' && customer.tier == 'gold' || old.total > 1"
        " || has_field('extra.note') || event.tenant == 'acme'"
    )
    condition = compile_condition(source)
    assert isinstance(condition, Condition)
    assert condition.source == source
    assert condition.fields == frozenset({"status", "customer", "total", "extra"})
    assert repr(condition) == f"Condition({source!r})"


# (condition, data, expected), evaluated on an UPDATE event without old_data.
DATA_CASES: list[tuple[str, Any, bool]] = [
    # equality
    ("status == 'paid'", {"status": "paid"}, True),
    ("status == 'paid'", {"status": "PAID"}, False),
    ("status == 'paid'", {}, False),
    ('status == "paid"', {"status": "paid"}, True),
    ("status != 'paid'", {}, True),
    ("status != 'paid'", {"status": "paid"}, False),
    ("total == 100", {"total": 100}, True),
    ("total == 100", {"total": 100.0}, True),
    ("total == 100.0", {"total": 100}, True),
    ("total == 2.5", {"total": 2.5}, True),
    ("flag == 1", {"flag": True}, False),
    ("flag == true", {"flag": True}, True),
    ("flag == True", {"flag": True}, True),
    ("flag == false", {"flag": 0}, False),
    ("n == true", {"n": 1}, False),
    ("code == '1'", {"code": 1}, False),
    ("code == 1", {"code": "1"}, False),
    ("x == null", {}, True),
    ("x == null", {"x": None}, True),
    ("x == None", {"x": None}, True),
    ("x == null", {"x": 0}, False),
    ("x != null", {"x": 0}, True),
    ("null == null", {}, True),
    ("1 == 1.0", {}, True),
    ("1 == true", {}, False),
    ("x == y", {}, True),
    ("x == y", {"x": 1, "y": 1.0}, True),
    ("x == y", {"x": 1, "y": True}, False),
    ("x == y", {"x": "a", "y": "a"}, True),
    ("x == x", {"x": math.nan}, False),
    ("tags == ['a', 'b']", {"tags": ["a", "b"]}, True),
    ("tags == ['a', 'b']", {"tags": ["a"]}, False),
    ("tags == [1, true]", {"tags": [1.0, True]}, True),
    ("tags == [1, true]", {"tags": [True, 1]}, False),
    ("x == y", {"x": {"a": [1, {"b": 2}]}, "y": {"a": [1.0, {"b": 2}]}}, True),
    ("x == y", {"x": {"a": [1, {"b": 2}]}, "y": {"a": [True, {"b": 2}]}}, False),
    ("x == y", {"x": {"a": 1}, "y": {"b": 1}}, False),
    # ordering
    ("total > 100", {"total": 150}, True),
    ("total > 100", {"total": 100}, False),
    ("total > 100", {"total": 100.5}, True),
    ("total > 100", {"total": "150"}, False),
    ("total > 100", {}, False),
    ("total > 0", {"total": True}, False),
    ("total > 100", {"total": [150]}, False),
    ("total >= 100", {"total": 100}, True),
    ("total < 100", {"total": 99.9}, True),
    ("total <= 100", {"total": 100}, True),
    ("total <= 100", {"total": 100.01}, False),
    ("100 < total", {"total": 150}, True),
    ("100 >= total", {"total": 150}, False),
    ("-5 < total", {"total": 0}, True),
    ("total > -1.5", {"total": -1}, True),
    ("total > 1e3", {"total": 1001}, True),
    ("total > 1", {"total": 10**30}, True),
    ("total > 1", {"total": math.nan}, False),
    ("total < 1", {"total": math.nan}, False),
    ("total > 1", {"total": math.inf}, True),
    ("name > 'm'", {"name": "n"}, True),
    ("name > 'm'", {"name": 5}, False),
    ("'m' < name", {"name": "n"}, True),
    ("x > true", {"x": True}, False),
    ("x >= null", {}, False),
    ("x < [1]", {"x": [0]}, False),
    ("a > b", {"a": 2, "b": 1}, True),
    ("a > b", {"a": 2, "b": 1.5}, True),
    ("a > b", {"a": "b", "b": "a"}, True),
    ("a > b", {"a": 2, "b": "1"}, False),
    ("a >= b", {"a": 1, "b": 1.0}, True),
    ("a <= b", {}, False),
    ("a < b", {"a": True, "b": 2}, False),
    ("2 > 1", {}, True),
    ("'b' > 1", {}, False),
    # logic and precedence
    ("a == 1 && b == 2", {"a": 1, "b": 2}, True),
    ("a == 1 && b == 2", {"a": 1, "b": 3}, False),
    ("a == 1 and b == 2", {"a": 1, "b": 2}, True),
    ("a == 1 || b == 2", {"b": 2}, True),
    ("a == 1 or b == 2", {}, False),
    ("a == 1 AND NOT b == 2", {"a": 1, "b": 3}, True),
    ("a == 1 Or b == 2", {"b": 2}, True),
    ("!(a == 1)", {"a": 2}, True),
    ("!a == 1", {"a": 2}, True),
    ("not a == 1", {"a": 1}, False),
    ("!!(a == 1)", {"a": 1}, True),
    ("not not a", {"a": 3}, True),
    ("a == 1 || b == 2 && c == 3", {"a": 1}, True),
    ("a == 1 || b == 2 && c == 3", {"b": 2, "c": 4}, False),
    ("(a == 1 || b == 2) && c == 3", {"a": 1, "c": 4}, False),
    ("(a == 1 || b == 2) && c == 3", {"b": 2, "c": 3}, True),
    ("total > 100 || status == 'paid'", {"total": "abc", "status": "paid"}, True),
    ("status == 'paid' || total > 100", {"total": "abc", "status": "paid"}, True),
    ("(a > 1) == true", {"a": 2}, True),
    ("has_field('a') == false", {}, True),
    # truthiness
    ("is_active", {"is_active": True}, True),
    ("is_active", {"is_active": False}, False),
    ("is_active", {}, False),
    ("is_active", {"is_active": 0}, False),
    ("is_active", {"is_active": "no"}, True),
    ("is_active", {"is_active": []}, False),
    ("!is_active", {}, True),
    ("true", {}, True),
    ("TRUE", {}, True),
    ("false", {}, False),
    ("null", {}, False),
    ("'text'", {}, True),
    ("0", {}, False),
    ("[]", {}, False),
    ("[0]", {}, True),
    # membership
    ("status in ['paid', 'shipped']", {"status": "paid"}, True),
    ("status in ['paid', 'shipped']", {"status": "lost"}, False),
    ("status in ['paid', 'shipped']", {}, False),
    ("status in ['paid']", {"status": ["paid"]}, False),
    ("status in ['paid']", {"status": {"paid": 1}}, False),
    ("status not in ['paid']", {}, True),
    ("status not in ['paid']", {"status": "paid"}, False),
    ("n in [1, 2]", {"n": 1.0}, True),
    ("n in [1, 2]", {"n": True}, False),
    ("n in [1.5]", {"n": 1.5}, True),
    ("flag in [true]", {"flag": 1}, False),
    ("flag in [true]", {"flag": True}, True),
    ("flag in [false]", {"flag": 0}, False),
    ("flag in [false]", {"flag": False}, True),
    ("flag in [1, 0]", {"flag": False}, False),
    ("x in [null]", {}, True),
    ("x in [1, 'a', 2.5, null]", {"x": 2.5}, True),
    ("x in [1, 'a', 2.5, null]", {"x": "a"}, True),
    ("x in [1, 'a', 2.5]", {"x": "1"}, False),
    ("x in []", {"x": 1}, False),
    ("x not in []", {"x": 1}, True),
    ("'vip' in tags", {"tags": ["vip", "new"]}, True),
    ("'vip' in tags", {"tags": "vip"}, False),
    ("'vip' in tags", {"tags": {"vip": True}}, False),
    ("'vip' in tags", {}, False),
    ("1 in nums", {"nums": [True]}, False),
    ("1 in nums", {"nums": [1.0]}, True),
    ("x in nums", {"x": [1], "nums": [[1.0]]}, True),
    ("1 in [1, 2]", {}, True),
    ("'1' not in [1]", {}, True),
    # paths
    ("customer.tier == 'gold'", {"customer": {"tier": "gold"}}, True),
    ("customer.tier == 'gold'", {"customer": None}, False),
    ("customer.tier == 'gold'", {"customer": "gold"}, False),
    ("customer.tier == 'gold'", {"customer": ["gold"]}, False),
    ("customer.tier == null", {"customer": 5}, True),
    ("items.0.sku == 'A'", {"items": [{"sku": "A"}]}, True),
    ("items.0.sku == 'A'", {"items": []}, False),
    ("items.0.sku == 'A'", {"items": {"0": {"sku": "A"}}}, True),
    ("items.1 == 5", {"items": [4, 5]}, True),
    ("items.2 == null", {"items": [4, 5]}, True),
    ("a.b.c.d.e == 1", {"a": {"b": {"c": {"d": {"e": 1}}}}}, True),
    ("a.b.c.d.0 == 1", {"a": {"b": {"c": {"d": [1]}}}}, True),
    ("a.b.c.d.e == 1", {"a": {"b": None}}, False),
    ("data.status == 'paid'", {"status": "paid"}, True),
    ("data.data == 1", {"data": 1}, True),
    ("data.old.x == 1", {"old": {"x": 1}}, True),
    ("naïve == 1", {"naïve": 1}, True),
    ("_private == 1", {"_private": 1}, True),
    ("x == null", None, True),
    ("x == null", [1, 2], True),
    ("x == null", "scalar", True),
    ("a.0 == null", {"a": [None]}, True),
    # functions on data
    ("has_field('a')", {"a": None}, True),
    ("has_field('a')", {}, False),
    ("has_field('a.b')", {"a": {"b": None}}, True),
    ("has_field('a.b')", {"a": None}, False),
    ("has_field('a.b')", {"a": {"c": 1}}, False),
    ("has_field('items.0')", {"items": [1]}, True),
    ("has_field('items.0')", {"items": []}, False),
    ('has_field("first name")', {"first name": 1}, True),
    ("has_field('a')", None, False),
    ("field_changed('status')", {"status": "paid"}, False),
    ("field_changed_to('status', 'paid')", {"status": "paid"}, False),
    # escapes and literals
    ("s == 'it\\'s'", {"s": "it's"}, True),
    ('s == "say \\"hi\\""', {"s": 'say "hi"'}, True),
    ("s == 'a\\\\b'", {"s": "a\\b"}, True),
    ("s == 'tab\\there'", {"s": "tab\there"}, True),
    ("s == '\\u00e9'", {"s": "é"}, True),
    ("s == 'line\\nbreak'", {"s": "line\nbreak"}, True),
    ("s == ''", {"s": ""}, True),
    ("n == -0", {"n": 0}, True),
    ("n == 123456789012345678901234567890", {"n": 123456789012345678901234567890}, True),
    # numbers compare as exact decimals (jsonb numbers arrive as int or Decimal)
    ("total > 100.10", {"total": Decimal("100.1")}, False),
    ("total > 100.10", {"total": Decimal("100.100000000000000001")}, True),
    ("total >= 100.10", {"total": Decimal("100.1")}, True),
    ("total < 100.10", {"total": Decimal("100.099999999999999999")}, True),
    ("total == 250", {"total": Decimal("250.00")}, True),
    ("total == 250.0", {"total": 250}, True),
    ("total != 250", {"total": Decimal("250.00")}, False),
    ("total == 12345678901234567.89", {"total": Decimal("12345678901234567.89")}, True),
    ("total == 12345678901234567.89", {"total": Decimal("12345678901234567.88")}, False),
    ("total > 12345678901234567.88", {"total": Decimal("12345678901234567.89")}, True),
    ("total in [250, 99.5]", {"total": Decimal("250.00")}, True),
    ("total in [250, 99.5]", {"total": Decimal("99.50")}, True),
    ("total in [250, 99.5]", {"total": Decimal("99.51")}, False),
    ("total not in [250]", {"total": Decimal("250.000")}, False),
    ("field_changed_to('total', 250)", {"total": Decimal("250.00")}, False),
    ("total == 1e3", {"total": 1000}, True),
    ("total > 1e-30", {"total": Decimal("0.0000000000000000000000000000011")}, True),
    ("a == b", {"a": Decimal("1.10"), "b": 1.1}, True),
    ("a < b", {"a": Decimal("0.1"), "b": 0.1}, False),
    # a float (a Python-built event) counts as the decimal it prints as
    ("total == 0.1", {"total": 0.1}, True),
    ("total > 100.10", {"total": 100.1}, False),
    ("total in [0.1]", {"total": 0.1}, True),
    ("total == 1152921504606846976", {"total": 2.0**60}, False),
    ("total > 100", {"total": math.nan}, False),
    ("total == 100.5", {"total": Decimal("NaN")}, False),
    ("x == 0.5", {"x": Decimal("Infinity")}, False),
    ("x > 0.5", {"x": Decimal("Infinity")}, True),
]


@pytest.mark.parametrize(("source", "data", "expected"), DATA_CASES)
def test_data_conditions(source: str, data: Any, expected: bool) -> None:
    assert compile_condition(source)(event(data)) is expected


ORDER = {"status": "shipped", "total": 10, "customer": {"tier": "gold"}}
PENDING = {"status": "pending", "total": 10, "customer": {"tier": "silver"}}


# (condition, event, expected) for old_data, the envelope and change detection.
EVENT_CASES: list[tuple[str, Event, bool]] = [
    ("old.status == 'pending'", event(ORDER, PENDING), True),
    ("old_data.status == 'pending'", event(ORDER, PENDING), True),
    ("old.status == 'pending'", event(ORDER), False),
    ("old.status == null", event(ORDER, [1]), True),
    ("old.customer.tier < customer.tier", event(ORDER, PENDING), False),
    ("old.customer.tier > customer.tier", event(ORDER, PENDING), True),
    ("event.entity_type == 'Order'", event(ORDER), True),
    ("event.event_type == 'UPDATE'", event(ORDER), True),
    ("event.entity_id == '42'", event(ORDER, entity_id="42"), True),
    ("event.tenant == 'acme'", event(ORDER, tenant="acme"), True),
    ("event.tenant in ['acme', 'globex']", event(ORDER, tenant="globex"), True),
    ("event.actor == null", event(ORDER), True),
    ("event.id == 7", event(ORDER), True),
    ("event.id > 6 && event.id < 8", event(ORDER), True),
    # field_changed trusts changed_fields when present...
    ("field_changed('status')", event(ORDER, changed=["status"]), True),
    ("field_changed('status')", event(ORDER, PENDING, changed=["total"]), False),
    ("field_changed('customer.tier')", event(ORDER, PENDING, changed=["customer"]), True),
    ("field_changed('customer.tier')", event(ORDER, ORDER, changed=["customer"]), False),
    ("field_changed('customer.tier')", event(ORDER, changed=["customer"]), True),
    # ...and otherwise compares old and new data; an INSERT (no old_data) changed nothing
    ("field_changed('status')", event(ORDER, PENDING), True),
    ("field_changed('status')", event(ORDER, ORDER), False),
    ("field_changed('status')", event(ORDER), False),
    ("field_changed('customer.tier')", event(ORDER, PENDING), True),
    ("field_changed('total')", event({"total": 1}, {"total": 1.0}), False),
    ("field_changed('total')", event({"total": 1}, {"total": True}), True),
    ("field_changed('total')", event({"total": 1}, {}), True),
    ("field_changed('total')", event(None, {"total": 1}), True),
    ("field_changed_to('status', 'shipped')", event(ORDER, PENDING), True),
    ("field_changed_to('status', 'shipped')", event(ORDER, ORDER), False),
    ("field_changed_to('status', 'pending')", event(ORDER, PENDING), False),
    ("field_changed_to('status', 'shipped')", event(ORDER, changed=["status"]), True),
    ("field_changed_to('n', 1)", event({"n": True}, {"n": 0}), False),
    ("field_changed_to('n', 1)", event({"n": 1.0}, {"n": 0}), True),
    ("field_changed_from('status', 'pending')", event(ORDER, PENDING), True),
    ("field_changed_from('status', 'paid')", event(ORDER, PENDING), False),
    ("field_changed_from('status', 'pending')", event(ORDER), False),
    ("field_changed_to('tags', ['a'])", event({"tags": ["a"]}, {"tags": []}), True),
    (
        "field_changed('status') && !field_changed_to('status', 'cancelled')",
        event(ORDER, PENDING),
        True,
    ),
    # Python-built events: dict subclasses are objects, other values compare by type and ==
    ("a.b == 1", event(OrderedDict(a=OrderedDict(b=1))), True),
    ("a.0 == 1", event({"a": (1,)}), False),
    ("field_changed('at')", event({"at": datetime(2024, 1, 1, tzinfo=UTC)}), False),
    (
        "field_changed('at')",
        event({"at": datetime(2024, 1, 2, tzinfo=UTC)}, {"at": datetime(2024, 1, 1, tzinfo=UTC)}),
        True,
    ),
]


@pytest.mark.parametrize(("source", "subject", "expected"), EVENT_CASES)
def test_event_conditions(source: str, subject: Event, expected: bool) -> None:
    assert compile_condition(source)(subject) is expected


@pytest.mark.parametrize("subject", [None, object(), 42, {"data": {}}])
def test_never_raises_on_a_non_event(subject: Any) -> None:
    assert compile_condition("status == 'paid' || field_changed('x')")(subject) is False


ERROR_CASES: list[tuple[str, str, int]] = [
    ("", "empty condition", 0),
    ("   \n ", "empty condition", 0),
    ("status == 'paid", "unterminated string (no closing ')", 10),
    ('status == "paid', 'unterminated string (no closing ")', 10),
    ("s == 'ends in backslash\\", "unterminated string", 5),
    ("s == 'bad \\q'", "unknown escape '\\q'", 10),
    ("s == '\\u12'", "unknown escape '\\u'", 6),
    ("foo('x')", "unknown function 'foo'; known functions: field_changed, field_changed_from", 0),
    ("a.b('x')", "unknown function 'a.b'", 0),
    ("(a == 1", "'(' is never closed", 0),
    ("a && (b || (c)", "'(' is never closed", 5),
    ("a == 1)", "')' has no matching '('", 6),
    ("(a == 1 b)", "expected ')', found 'b'", 8),
    ("a == 1 b", "expected '&&', '||' or the end of the condition, found 'b'", 7),
    ("a == 1 'x'", "found \"'x'\"", 7),
    ("a = 1", "'=' is not an operator; use '=='", 2),
    ("a === 1", "'=' is not an operator", 4),
    ("a & b", "use '&&'", 2),
    ("a | b", "use '||'", 2),
    ("a ==", "expected a value, a field or a function call, but the condition ended", 4),
    ("a &&", "but the condition ended", 4),
    ("()", "expected a value, a field or a function call, found ')'", 1),
    ("a == 1 == 2", "comparisons cannot be chained", 7),
    ("a in [1] in [2]", "comparisons cannot be chained", 9),
    ("a in 'x'", "'in' needs a list", 2),
    ("a not in 1", "'not in' needs a list", 2),
    ("x in [a]", "expected a string, a number, true, false or null, found 'a'", 6),
    ("x in [[1]]", "expected a string, a number", 6),
    ("x in [1 2]", "expected ',' between list items, found '2'", 8),
    ("x in [1", "'[' is never closed", 5),
    ("x in [1,", "expected a string, a number, true, false or null, but the condition ended", 8),
    ("x in [1, ]", "expected a string, a number", 9),
    ("event.foo == 1", "unknown envelope field 'event.foo'; known: event.{actor, entity_id", 0),
    ("event.tenant.x == 1", "unknown envelope field", 0),
    ("old == 1", "'old' needs a field after it, e.g. old.status", 0),
    ("event", "'event' needs a field after it", 0),
    ("x && data", "write data.data for a field named 'data'", 5),
    ("has_field(a)", "expected a quoted field path as the first argument of has_field()", 10),
    ("has_field()", "expected a quoted field path", 10),
    ("has_field('a', 1)", "expected ')' to close has_field()", 13),
    ("field_changed_to('a')", "expected ',' and a value: field_changed_to() takes two", 20),
    ("field_changed_to('a', b)", "expected a string, a number", 22),
    ("has_field('a..b')", "field path 'a..b' has an empty segment", 10),
    ("has_field('')", "empty segment", 10),
    ("a. == 1", "expected a field name or list index after '.'", 1),
    ("a.b. == 1", "after '.'", 3),
    ("items.0x == 1", "after '.'", 5),
    ("x == 1e200000", "number 1e200000 is out of range", 5),
    ("x == 1e99999999999999999999", "number 1e99999999999999999999 is out of range", 5),
    ("x == 12abc", "malformed number starting '12'", 5),
    ("x == 1.2.3", "malformed number starting '1.2'", 5),
    ("x == 1.", "malformed number", 5),
    ("x == -y", "'-' is only allowed directly before a number", 5),
    ("x == @", "unexpected character '@'", 5),
    ("x == ٣", "unexpected character '٣'", 5),
    ("x == " + "9" * 5000, "number has too many digits", 5),
    ("(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1), "nests deeper than 32", 32),
    ("!" * 40 + "a", "nests deeper than 32 levels", 32),
    ("not " * 33 + "a", "nests deeper", 128),
]


@pytest.mark.parametrize(("source", "message", "position"), ERROR_CASES)
def test_syntax_errors(source: str, message: str, position: int) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    error = caught.value
    assert message in error.message
    assert error.position == position
    assert str(error) == f"{error.message} at column {position}"
    assert isinstance(error, PgobsError)


def test_unknown_function_lists_all_known_ones() -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition("changed('x')")
    assert caught.value.message.endswith(
        "known functions: field_changed, field_changed_from, field_changed_to, has_field"
    )


@pytest.mark.parametrize(
    "template",
    [
        "({})",
        "!({})",
        "a.b.c == ({})",
        "items.0.sku in [({}), 'x']",
        "x || !(y && ({}))",
    ],
)
def test_deepest_allowed_nesting_compiles(template: str) -> None:
    """The nesting limit must keep generated code within CPython's own limits."""
    source = "a.b.c == 1"
    for _ in range(MAX_NESTING):
        candidate = template.format(source)
        try:
            parse(candidate)
        except ConditionSyntaxError:
            break
        source = candidate
    assert compile_condition(source)(event({"a": {"b": {"c": 1}}})) in (True, False)


def test_long_conditions_compile() -> None:
    many_values = "x in [" + ", ".join(map(str, range(5000))) + "]"
    assert compile_condition(many_values)(event({"x": 4999}))
    many_clauses = " || ".join(f"f{n}.a.b.c.d == {n}" for n in range(1000))
    assert compile_condition(many_clauses)(event({"f999": {"a": {"b": {"c": {"d": 999}}}}}))


# --- A slow reference interpreter, written from the semantics, not from the compiler ---------


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "other"


def ref_decimal(value: int | float | Decimal) -> Decimal:
    """A number as the decimal it is (int, Decimal) or prints as (float)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def ref_eq(a: Any, b: Any) -> bool:
    if kind(a) != kind(b):
        return False
    if kind(a) == "bool":
        return a is b
    if kind(a) == "number":
        x, y = ref_decimal(a), ref_decimal(b)
        return not (x.is_nan() or y.is_nan()) and x == y
    if kind(a) == "list":
        return len(a) == len(b) and all(ref_eq(x, y) for x, y in zip(a, b, strict=True))
    if kind(a) == "object":
        return set(a) == set(b) and all(ref_eq(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_order(op: CompareOp, a: Any, b: Any) -> bool:
    if kind(a) != kind(b) or kind(a) not in ("number", "string"):
        return False
    if kind(a) == "number":
        a, b = ref_decimal(a), ref_decimal(b)
        if a.is_nan() or b.is_nan():
            return False
    match op:
        case CompareOp.LT:
            return bool(a < b)
        case CompareOp.LE:
            return bool(a <= b)
        case CompareOp.GT:
            return bool(a > b)
        case CompareOp.GE:
            return bool(a >= b)
    raise AssertionError(op)


def ref_walk(value: Any, segments: tuple[str, ...]) -> Any:
    for segment in segments:
        if isinstance(value, dict):
            value = value.get(segment)
        elif (
            isinstance(value, list)
            and segment.isascii()
            and segment.isdigit()
            and int(segment) < len(value)
        ):
            value = value[int(segment)]
        else:
            return None
    return value


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def ref_changed(subject: Event, path: tuple[str, ...]) -> bool:
    old = subject.old_data
    if subject.changed_fields is not None:
        if path[0] not in subject.changed_fields:
            return False
        if len(path) == 1 or not isinstance(old, dict):
            return True
    elif not isinstance(old, dict):
        return False
    return not ref_eq(ref_walk(old, path), ref_walk(as_object(subject.data), path))


def ref_value(node: Node, subject: Event) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Path):
        if node.root is Root.EVENT:
            return getattr(subject, node.segments[0])
        start = subject.data if node.root is Root.DATA else subject.old_data
        return ref_walk(as_object(start), node.segments)
    return ref_test(node, subject)


def ref_test(node: Node, subject: Event) -> bool:
    match node:
        case Literal() | Path():
            return bool(ref_value(node, subject))
        case Not(operand=operand):
            return not ref_test(operand, subject)
        case And(operands=operands):
            return all(ref_test(operand, subject) for operand in operands)
        case Or(operands=operands):
            return any(ref_test(operand, subject) for operand in operands)
        case HasField(path=path):
            parent, last = ref_walk(as_object(subject.data), path[:-1]), path[-1]
            if isinstance(parent, dict):
                return last in parent
            return isinstance(parent, list) and last.isdigit() and int(last) < len(parent)
        case FieldChanged(path=path):
            return ref_changed(subject, path)
        case FieldChangedTo(path=path, value=value):
            new = ref_walk(as_object(subject.data), path)
            return ref_changed(subject, path) and ref_eq(new, value)
        case FieldChangedFrom(path=path, value=value):
            old = ref_walk(as_object(subject.old_data), path)
            return ref_changed(subject, path) and ref_eq(old, value)
        case Compare(op=op, left=left, right=right):
            a, b = ref_value(left, subject), ref_value(right, subject)
            if op is CompareOp.EQ:
                return ref_eq(a, b)
            if op is CompareOp.NE:
                return not ref_eq(a, b)
            if op is CompareOp.IN or op is CompareOp.NOT_IN:
                found = isinstance(b, list | tuple) and any(ref_eq(a, item) for item in b)
                return found if op is CompareOp.IN else not found
            return ref_order(op, a, b)
    raise AssertionError(node)


# --- Random syntax trees, rendered back to text ----------------------------------------------

NAMES = ["a", "b", "status", "total", "items"]
SEGMENTS = [*NAMES, "0", "1"]
# Literals and data draw mostly from one small pool, so that comparisons often meet equal values.
POOL: list[Any] = [0, 1, -1, Decimal("1.0"), Decimal("2.5"), True, False, None, "", "a", "paid"]
pool = st.sampled_from([*POOL, "it's"])
# Data also holds floats (events built in Python) that print as the pool's decimals.
data_pool = st.sampled_from([*POOL, 1.0, 2.5, "it's"])
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)

literal_scalars = st.one_of(
    pool,
    pool,
    pool,
    st.integers(),
    finite_decimals,
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f))),
    st.text(max_size=4),
)
literal_values = st.one_of(literal_scalars, st.lists(literal_scalars, max_size=4).map(tuple))
literals = st.builds(Literal, literal_values)
list_literals = st.builds(Literal, st.lists(literal_scalars, max_size=4).map(tuple))
segment_tails = st.one_of(st.just(()), st.lists(st.sampled_from(SEGMENTS), max_size=2))
data_paths = st.builds(lambda h, t: Path(Root.DATA, (h, *t)), st.sampled_from(NAMES), segment_tails)
paths = st.one_of(
    data_paths,
    data_paths,
    data_paths,
    st.builds(lambda h, t: Path(Root.OLD, (h, *t)), st.sampled_from(SEGMENTS), segment_tails),
    st.builds(lambda n: Path(Root.EVENT, (n,)), st.sampled_from(sorted(ENVELOPE_FIELDS))),
)
function_paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(tuple)
calls = st.one_of(
    st.builds(HasField, function_paths),
    st.builds(FieldChanged, function_paths),
    st.builds(FieldChangedTo, function_paths, literal_values),
    st.builds(FieldChangedFrom, function_paths, literal_values),
)
ORDERINGS = [op for op in CompareOp if op not in (CompareOp.IN, CompareOp.NOT_IN)]


def comparisons(operands: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(Compare, st.sampled_from(ORDERINGS), operands, operands),
        st.builds(
            Compare,
            st.sampled_from([CompareOp.IN, CompareOp.NOT_IN]),
            operands,
            st.one_of(list_literals, list_literals, paths),
        ),
    )


def extend(inner: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    many = st.lists(inner, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Not, inner),
        st.builds(And, many),
        st.builds(Or, many),
        comparisons(st.one_of(inner, literals, paths)),
    )


values = st.one_of(literals, paths)
comparison_leaves = comparisons(values)
trees = st.recursive(
    st.one_of(comparison_leaves, comparison_leaves, values, calls), extend, max_leaves=6
)


def render_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return render_string(value)
    return str(value)  # an int, or a Decimal in a form the lexer reads back exactly


def render_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(render_scalar, value)) + "]"
    return render_scalar(value)


def render(node: Node, words: bool) -> str:
    """Condition text for ``node``; compound nodes are parenthesised, so it parses back as is."""
    match node:
        case Literal(value=value):
            return render_value(value)
        case Path(root=Root.DATA, segments=segments):
            return ".".join(segments)
        case Path(root=root, segments=segments):
            return ".".join((root.value, *segments))
        case Not(operand=operand):
            return f"({'not ' if words else '!'}{render(operand, words)})"
        case And(operands=operands):
            joiner = " and " if words else " && "
            return "(" + joiner.join(render(operand, words) for operand in operands) + ")"
        case Or(operands=operands):
            joiner = " or " if words else " || "
            return "(" + joiner.join(render(operand, words) for operand in operands) + ")"
        case Compare(op=op, left=left, right=right):
            return f"({render(left, words)} {op.value} {render(right, words)})"
        case HasField(path=path) | FieldChanged(path=path):
            name = "has_field" if isinstance(node, HasField) else "field_changed"
            return f"{name}({render_string('.'.join(path))})"
        case FieldChangedTo(path=path, value=value) | FieldChangedFrom(path=path, value=value):
            name = "field_changed_to" if isinstance(node, FieldChangedTo) else "field_changed_from"
            return f"{name}({render_string('.'.join(path))}, {render_value(value)})"
    raise AssertionError(node)


def nesting(node: Node) -> int:
    """Parentheses and negations around the deepest leaf of ``render(node)``."""
    match node:
        case Not(operand=operand):
            return 2 + nesting(operand)
        case And(operands=operands) | Or(operands=operands):
            return 1 + max(map(nesting, operands))
        case Compare(left=left, right=right):
            return 1 + max(nesting(left), nesting(right))
    return 0


# --- Random events with JSON-like data ---------------------------------------------------------

KEYS = [*NAMES, "0", "1"]
json_scalars = st.one_of(
    data_pool,
    data_pool,
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    # jsonb cannot hold NaN; a Decimal NaN (only from Python code) may make a whole condition false
    st.decimals(allow_nan=False),
    st.text(max_size=3),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, kids))
    ),
    max_leaves=6,
)
field_values = st.one_of(data_pool, data_pool, json_values)
rows = st.fixed_dictionaries(dict.fromkeys(NAMES, field_values), optional={"0": json_values})
envelope_text = st.one_of(st.none(), data_pool, st.text(max_size=3))
events = st.builds(
    Event,
    id=st.one_of(st.sampled_from([0, 1, -1]), st.integers()),
    entity_type=st.sampled_from(["Order", "a", ""]),
    event_type=st.sampled_from(["INSERT", "UPDATE", "DELETE"]),
    data=st.one_of(rows, rows, json_values),
    entity_id=envelope_text,
    old_data=st.one_of(st.none(), rows, rows, json_values),
    changed_fields=st.one_of(st.none(), st.lists(st.sampled_from(KEYS), unique=True)),
    tenant=envelope_text,
    actor=envelope_text,
)

# The explain phase traces every line while shrinking (on Python 3.11), which can push a failing
# run past the per-test timeout; the shrunk example is what a reader needs.
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[phase for phase in Phase if phase is not Phase.explain],
)


@PROPERTY_SETTINGS
@given(tree=trees, words=st.booleans(), subjects=st.lists(events, min_size=2, max_size=6))
def test_compiled_code_agrees_with_the_reference(
    tree: Node, words: bool, subjects: list[Event]
) -> None:
    assume(nesting(tree) <= MAX_NESTING)
    source = render(tree, words)
    assert parse(source) == tree
    condition = compile_condition(source)
    for subject in subjects:
        assert condition(subject) is ref_test(tree, subject), (source, subject)


DATA_VALUES: list[Any] = [
    *[0, 1, -1, 1.0, 2.5, 0.1, -0.0, 10**30, 2.0**60, math.nan, math.inf, True, False, None],
    *[Decimal("1.00"), Decimal("2.5"), Decimal("0.1"), Decimal("-0"), Decimal("1E+30")],
    *[Decimal("Infinity"), Decimal("-Infinity"), Decimal("100.100000000000000001")],
    *["", "a", "b", "1", [1], [True], [Decimal("2.50")], [], {"a": 1}, {"a": True}],
]
LITERAL_VALUES: list[Any] = [
    *[0, 1, -1, Decimal("1.0"), Decimal("2.5"), Decimal("0.1"), 10**30, 2**60],
    *[Decimal("100.10"), Decimal("1E+30"), True, False, None, "", "a", "b", "1"],
    *[(), (False,), (True, 1), (0, "a", None), (Decimal("1.0"), Decimal("2.5")), ("a", "b")],
    *[(1,), (Decimal("0.1"), 2**60)],
]


@pytest.mark.parametrize("op", list(CompareOp))
@pytest.mark.parametrize("form", ["x {op} {b}", "{b} {op} x"])
def test_literal_comparisons_agree_with_the_reference(op: CompareOp, form: str) -> None:
    """Every operator, every kind of literal, every kind of value: the compiled fast paths."""
    for b in LITERAL_VALUES:
        if op in (CompareOp.IN, CompareOp.NOT_IN) and (
            form != "x {op} {b}" or b.__class__ is not tuple
        ):
            continue
        source = form.format(op=op.value, b=render_value(b))
        condition, tree = compile_condition(source), parse(source)
        for a in DATA_VALUES:
            subject = event({"x": a})
            assert condition(subject) is ref_test(tree, subject), (source, a)


@pytest.mark.parametrize("op", list(CompareOp))
def test_path_comparisons_agree_with_the_reference(op: CompareOp) -> None:
    source = f"x {op.value} y"
    condition, tree = compile_condition(source), parse(source)
    for a in DATA_VALUES:
        for b in [*DATA_VALUES, *LITERAL_VALUES]:
            subject = event({"x": a, "y": b})
            assert condition(subject) is ref_test(tree, subject), (source, a, b)


@PROPERTY_SETTINGS
@given(call=calls, subjects=st.lists(events, min_size=2, max_size=4))
def test_functions_agree_with_the_reference(call: Node, subjects: list[Event]) -> None:
    condition = compile_condition(render(call, False))
    for subject in subjects:
        assert condition(subject) is ref_test(call, subject), (render(call, False), subject)


EVERY_SHAPE = [
    compile_condition(source)
    for source in [
        "status == 'paid' && total > 100",
        "total >= 1.5 || total < -1 || total == 1 || total != 2.5",
        "a.b > 'x' && a.0.b <= 'y' && items.1.0.a == items.0",
        "a.b.c.d.e == [1, 'x'] || a.b.c.d.0 != null",
        "status in ['a', 1, true, false, null, 2.5] && total not in [0]",
        "a in items && 'x' not in b && a == b && a > b && a <= b",
        "has_field('a.b') && has_field('items.0.a') || has_field('a')",
        "field_changed('a') || field_changed('a.b.0') || field_changed_to('status', 'paid')",
        "field_changed_from('total', 1) || old.a.b == old.0 || old.items.0 > 1",
        "event.tenant == 'a' || event.id > 1 || event.actor in ['x'] || event.entity_id",
        "!status && not total || a",
    ]
]


@PROPERTY_SETTINGS
@given(subject=events)
def test_evaluation_never_raises(subject: Event) -> None:
    for condition in EVERY_SHAPE:
        assert condition(subject) in (True, False)


@PROPERTY_SETTINGS
@given(a=json_values, b=json_values, path=function_paths, subject=events)
def test_helpers_never_raise(a: Any, b: Any, path: tuple[str, ...], subject: Event) -> None:
    """The guard in each generated function is a last resort: comparisons must not need it."""
    assert _eq(a, b) is ref_eq(a, b)
    assert _lt(a, b) is ref_order(CompareOp.LT, a, b)
    assert _le(a, b) is ref_order(CompareOp.LE, a, b)
    assert _in(a, b) in (True, False)
    steps = _steps(path)
    assert _get(a, steps) is ref_walk(a, path)
    assert _has(a, steps) in (True, False)
    assert _changed(subject, steps) is ref_changed(subject, path)


TOKENS = [
    "(", ")", "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "=", "!", "&&", "||", "&", "|",
    "and", "or", "not", "in", "a", "a.b", "items.0", "old.a", "event.tenant", "event.x", "data",
    "'s'", '"s', "'", "\\", "1", "-2.5", "-", "1e999", "1.", "true", "null", "None",
    "has_field", "field_changed_to", "('a')", "'a.b'", "'a..b'", ".", "@",
]  # fmt: skip


@PROPERTY_SETTINGS
@given(
    source=st.one_of(
        st.text(),
        st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
        st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    ),
    subject=events,
)
def test_parser_raises_only_syntax_errors(source: str, subject: Event) -> None:
    outcome = compile_or_error(source)
    if isinstance(outcome, ConditionSyntaxError):
        assert 0 <= outcome.position <= len(source)
    else:
        assert outcome(subject) in (True, False)


def compile_or_error(source: str) -> Condition | ConditionSyntaxError:
    try:
        return compile_condition(source)
    except ConditionSyntaxError as error:
        return error
