"""Compile a condition once into one Python function, so evaluating it per event is cheap.

The syntax tree becomes the source of a single function with the common cases inlined (a dict
lookup, a type check, one comparison) and small helpers for the rest. Only ``repr()`` of parsed
constants, names bound to parsed constants and names from fixed tables reach that source, never
raw condition text.

Values are compared as JSON values: numbers (``int``, ``Decimal``, ``float``, never ``bool``)
compare with each other as exact decimals, so ``total > 100.10`` is false for 100.1 and true for
100.100000000000000001, and ``250.00 == 250``; a float counts as the decimal it prints as (0.1,
not 0.1000000000000000055…). Strings compare with strings; ``null`` equals only ``null``; lists
and objects compare item by item. Ordering values of different kinds is false, NaN is unordered,
and a missing field is null.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, assert_never, final

from pgobs.conditions.parser import (
    ENVELOPE_FIELDS,
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
    Scalar,
    Value,
    parse,
)
from pgobs.events import Event

__all__ = ["Condition", "compile_condition"]

# A parsed path segment with its list index precomputed: ("0", 0), ("sku", None).
Step = tuple[str, int | None]

_EMPTY: dict[str, Any] = {}
_NUMBER = (int, float, Decimal)
_MAX_INDEX_DIGITS = 18  # longer digit runs cannot index any list that fits in memory
_MAX_INLINE_STEPS = 3  # deeper paths call _get, which keeps the generated source shallow


@final
class Condition:
    """A compiled condition: call it with an Event; it returns a bool and never raises."""

    __slots__ = ("_evaluate", "fields", "source")

    def __init__(
        self, source: str, fields: frozenset[str], evaluate: Callable[[Event], bool]
    ) -> None:
        self.source = source
        self.fields = fields
        self._evaluate = evaluate

    def __call__(self, event: Event) -> bool:
        return self._evaluate(event)

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def compile_condition(source: str) -> Condition:
    """Parse and compile ``source``; raises ConditionSyntaxError for an invalid condition."""
    tree = parse(source)
    emitter = _Emitter()
    body = emitter.test(tree)
    lines = ["def _condition(e):", "    try:"]
    if emitter.reads_data:
        lines += [
            "        d = e.data",
            "        if d.__class__ is not dict:",
            "            d = _root(d)",
        ]
    if emitter.reads_old:
        lines += [
            "        o = e.old_data",
            "        if o.__class__ is not dict:",
            "            o = _root(o)",
        ]
    lines += [f"        return {body}", "    except Exception:", "        return False"]
    namespace = dict(_NAMESPACE)
    # S102: the generated source holds only repr() of parsed constants and names (see above).
    namespace.update(emitter.constants)
    exec(compile("\n".join(lines), "<condition>", "exec"), namespace)  # noqa: S102
    return Condition(source, _fields(tree), namespace["_condition"])


def _fields(node: Node) -> frozenset[str]:
    """Top-level data fields a condition reads, for docs and debug output."""
    match node:
        case Path(root=Root.DATA | Root.OLD, segments=segments):
            return frozenset(segments[:1])
        case Literal() | Path():
            return frozenset()
        case (
            HasField(path=path)
            | FieldChanged(path=path)
            | FieldChangedTo(path=path)
            | FieldChangedFrom(path=path)
        ):
            return frozenset(path[:1])
        case Compare(left=left, right=right):
            return _fields(left) | _fields(right)
        case Not(operand=operand):
            return _fields(operand)
        case And(operands=operands) | Or(operands=operands):
            return frozenset().union(*map(_fields, operands))
        case _:
            assert_never(node)


class _Emitter:
    """Turns a syntax tree into Python expression source."""

    def __init__(self) -> None:
        self._temps = 0
        self.reads_data = False
        self.reads_old = False
        # Values the source names rather than spells: a Decimal, or a tuple or set holding one,
        # would be rebuilt on every evaluation if written out.
        self.constants: dict[str, object] = {}

    def _temp(self) -> str:
        self._temps += 1
        return f"_v{self._temps}"

    def _constant(self, value: object) -> str:
        """Source naming ``value``: its repr when that is a constant Python folds, else a name."""
        if not isinstance(value, Decimal | tuple | frozenset):
            return repr(value)
        name = f"_c{len(self.constants) + 1}"
        self.constants[name] = value
        return name

    def test(self, node: Node) -> str:
        """Source of an expression that evaluates ``node`` to a bool."""
        match node:
            case Literal(value=value):
                return repr(bool(value))
            case Path():
                return f"(not not {self.value(node)})"
            case Compare():
                return self._compare(node)
            case Not(operand=operand):
                return f"(not {self.test(operand)})"
            case And(operands=operands):
                return "(" + " and ".join(map(self.test, operands)) + ")"
            case Or(operands=operands):
                return "(" + " or ".join(map(self.test, operands)) + ")"
            case HasField(path=path):
                self.reads_data = True
                if len(path) == 1:
                    return f"({path[0]!r} in d)"
                return f"_has(d, {_steps(path)!r})"
            case FieldChanged(path=path):
                return f"_changed(e, {_steps(path)!r})"
            case FieldChangedTo(path=path, value=value):
                # Compare the value first: it is cheaper and usually decides alone.
                new_value = Compare(CompareOp.EQ, Path(Root.DATA, path), Literal(value))
                return self.test(And((new_value, FieldChanged(path))))
            case FieldChangedFrom(path=path, value=value):
                old_value = Compare(CompareOp.EQ, Path(Root.OLD, path), Literal(value))
                return self.test(And((old_value, FieldChanged(path))))
            case _:
                assert_never(node)

    def value(self, node: Node) -> str:
        """Source of an expression that evaluates ``node`` to its JSON value."""
        if isinstance(node, Literal):
            return self._constant(node.value)
        if not isinstance(node, Path):
            return self.test(node)
        if node.root is Root.EVENT:
            (name,) = node.segments
            assert name in ENVELOPE_FIELDS  # the parser admits only these
            return f"e.{name}"
        if node.root is Root.DATA:
            self.reads_data = True
            source = "d"
        else:
            self.reads_old = True
            source = "o"
        steps = _steps(node.segments)
        if len(steps) > _MAX_INLINE_STEPS:
            return f"_get({source}, {steps!r})"
        source = f"{source}.get({steps[0][0]!r})"
        for key, index in steps[1:]:
            t = self._temp()
            if index is None:
                source = (
                    f"({t}.get({key!r}) if ({t} := {source}).__class__ is dict"
                    f" else _step({t}, {key!r}, None))"
                )
            else:
                source = (
                    f"({t}[{index}] if ({t} := {source}).__class__ is list and len({t}) > {index}"
                    f" else _step({t}, {key!r}, {index}))"
                )
        return source

    def _compare(self, node: Compare) -> str:
        op, left, right = node.op, node.left, node.right
        if isinstance(left, Literal) and isinstance(right, Literal):
            return repr(_compare_constants(op, left.value, right.value))
        if op is CompareOp.IN or op is CompareOp.NOT_IN:
            if isinstance(right, Literal):
                assert isinstance(right.value, tuple)  # the parser requires a list after 'in'
                member = self._in_literal(self.value(left), right.value)
            else:
                member = f"_in({self.value(left)}, {self.value(right)})"
            return member if op is CompareOp.IN else f"(not {member})"
        if isinstance(left, Literal):  # keep the constant on the right, where fast paths expect it
            op, left, right = _MIRRORED[op], right, left
        if op is CompareOp.EQ or op is CompareOp.NE:
            equal = self._equal(left, right)
            return equal if op is CompareOp.EQ else f"(not {equal})"
        if isinstance(right, Literal):
            return self._order_literal(op, self.value(left), right.value)
        smaller, larger = (left, right) if op in (CompareOp.LT, CompareOp.LE) else (right, left)
        helper = "_lt" if op in (CompareOp.LT, CompareOp.GT) else "_le"
        return f"{helper}({self.value(smaller)}, {self.value(larger)})"

    def _equal(self, left: Node, right: Node) -> str:
        value = self.value(left)
        if not isinstance(right, Literal) or isinstance(right.value, tuple):
            return f"_eq({value}, {self.value(right)})"
        constant = right.value
        if constant is None or isinstance(constant, bool):
            return f"({value} is {constant!r})"
        if isinstance(constant, str):
            return f"({value} == {constant!r})"
        assert isinstance(constant, int | Decimal)  # the parser makes no other scalar
        return self._number_compare("==", value, constant, "_eq({t}, {c})")

    def _order_literal(self, op: CompareOp, value: str, constant: Value) -> str:
        if isinstance(constant, bool) or not isinstance(constant, int | Decimal | str):
            return "False"
        if isinstance(constant, str):
            t = self._temp()
            kind = _is_string(f"({t} := {value})", t)
            return f"({kind} and {t} {op.value} {constant!r})"
        slow = {
            CompareOp.LT: "_lt({t}, {c})",
            CompareOp.LE: "_le({t}, {c})",
            CompareOp.GT: "_lt({c}, {t})",
            CompareOp.GE: "_le({c}, {t})",
        }[op]
        return self._number_compare(op.value, value, constant, slow)

    def _number_compare(self, op: str, value: str, constant: int | Decimal, slow: str) -> str:
        """``value op constant`` for a number constant. int and Decimal values compare exactly
        inline; anything else (a float, a bool, a non-number) takes ``slow``, a helper call
        written with ``{t}`` for the value and ``{c}`` for the constant.

        An int constant gets a Decimal twin: a Decimal compares with a Decimal faster than
        with an int, which it would convert on every evaluation.
        """
        t, c = self._temp(), self._constant(constant)
        fallback = slow.format(t=t, c=c)
        if isinstance(constant, Decimal):
            return (
                f"({t} {op} {c} if ({t} := {value}).__class__ is Decimal or {t}.__class__ is int"
                f" else {fallback})"
            )
        twin = self._constant(Decimal(constant))
        return (
            f"({t} {op} {c} if ({t} := {value}).__class__ is int"
            f" else {t} {op} {twin} if {t}.__class__ is Decimal else {fallback})"
        )

    def _in_literal(self, value: str, items: tuple[Scalar, ...]) -> str:
        """Membership in a constant list, tested per kind so that 1 never matches true."""
        strings = tuple(item for item in items if isinstance(item, str))
        numbers = tuple(i for i in items if _is_num(i))
        singletons = [(c,) for c in (True, False, None) if any(item is c for item in items)]
        groups = [group for group in (strings, numbers) if group] + singletons
        if not groups:
            return "False"
        t = self._temp()
        # The first clause binds the temporary; the later ones reuse it.
        tests = [
            self._member_test(f"({t} := {value})" if i == 0 else t, t, group)
            for i, group in enumerate(groups)
        ]
        return "(" + " or ".join(tests) + ")"

    def _member_test(self, first: str, t: str, group: tuple[Scalar, ...]) -> str:
        """Source testing membership in ``group``: all strings, all numbers, or one singleton."""
        if isinstance(group[0], str):
            return f"({_is_string(first, t)} and {t} in {_set(group)})"
        if _is_num(group[0]):
            # Equal numbers hash alike across int and Decimal, so a set finds 250 for 250.00.
            members = self._constant(frozenset(group))
            exact = _exact_number(first, t)
            return f"({t} in {members} if {exact} else _in_numbers({t}, {members}))"
        return f"{first} is {group[0]!r}"


def _exact_number(first: str, t: str) -> str:
    """Source testing for the number types that compare exactly with constants: int (not bool)
    and Decimal. ``first`` is evaluated before ``t``."""
    return f"({first}.__class__ is int or {t}.__class__ is Decimal)"


def _is_string(first: str, t: str) -> str:
    return f"({first}.__class__ is str or isinstance({t}, str))"


def _set(items: tuple[Scalar, ...]) -> str:
    """A set display: CPython folds ``x in {...}`` of constants into one frozenset constant."""
    return "{" + ", ".join(map(repr, dict.fromkeys(items))) + "}"


def _steps(segments: tuple[str, ...]) -> tuple[Step, ...]:
    return tuple(
        (s, int(s) if s.isascii() and s.isdigit() and len(s) <= _MAX_INDEX_DIGITS else None)
        for s in segments
    )


_MIRRORED = {
    CompareOp.EQ: CompareOp.EQ,
    CompareOp.NE: CompareOp.NE,
    CompareOp.LT: CompareOp.GT,
    CompareOp.LE: CompareOp.GE,
    CompareOp.GT: CompareOp.LT,
    CompareOp.GE: CompareOp.LE,
}


def _compare_constants(op: CompareOp, left: Value, right: Value) -> bool:
    """Fold a comparison of two literals at compile time, with the runtime helpers."""
    match op:
        case CompareOp.EQ:
            return _eq(left, right)
        case CompareOp.NE:
            return not _eq(left, right)
        case CompareOp.LT:
            return _lt(left, right)
        case CompareOp.LE:
            return _le(left, right)
        case CompareOp.GT:
            return _lt(right, left)
        case CompareOp.GE:
            return _le(right, left)
        case CompareOp.IN:
            return _in(left, right)
        case CompareOp.NOT_IN:
            return not _in(left, right)
        case _:
            assert_never(op)


# Runtime helpers the generated functions call. None of them raises on JSON-like values.


def _root(value: object) -> dict[str, Any]:
    """The object paths start from: anything but a dict (None, a list, a scalar) reads as {}."""
    return value if isinstance(value, dict) else _EMPTY


def _step(node: object, key: str, index: int | None) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if index is not None and isinstance(node, list) and index < len(node):
        return node[index]
    return None


def _get(node: object, steps: tuple[Step, ...]) -> Any:
    for key, index in steps:
        node = _step(node, key, index)
    return node


def _has(node: object, steps: tuple[Step, ...]) -> bool:
    parent = _get(node, steps[:-1])
    key, index = steps[-1]
    if isinstance(parent, dict):
        return key in parent
    return index is not None and isinstance(parent, list) and index < len(parent)


def _is_num(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _as_decimal(value: float) -> Decimal | float:
    """A float as the decimal it prints as; NaN stays a float, unordered and equal to nothing."""
    return Decimal(repr(value)) if value == value else value


def _exact_pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Two numbers made comparable as decimals: a float meeting another kind of number is read
    as the decimal it prints as. Floats among themselves compare as they are (same order)."""
    if a.__class__ is not b.__class__:
        if isinstance(a, float):
            a = _as_decimal(a)
        if isinstance(b, float):
            b = _as_decimal(b)
    return a, b


def _num_eq(a: Any, b: Any) -> bool:
    a, b = _exact_pair(a, b)
    try:
        return bool(a == b)
    except ArithmeticError:  # a signalling NaN
        return False


def _in_numbers(value: object, members: frozenset[object]) -> bool:
    """Membership in a constant set of numbers, for the values that are not int or Decimal."""
    if not _is_num(value):
        return False
    if isinstance(value, float):
        value = _as_decimal(value)
    try:
        return value in members
    except (ArithmeticError, TypeError):  # a signalling NaN cannot be hashed
        return False


def _eq(left: object, right: object) -> bool:
    """JSON equality: like ``==`` but true never equals 1 and '1' never equals 1.

    Iterative, so deeply nested values cannot exhaust the stack.
    """
    pending = [(left, right)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, bool) or isinstance(b, bool):
            if a is not b:
                return False
        elif _is_num(a):
            if not (_is_num(b) and _num_eq(a, b)):
                return False
        elif isinstance(a, str):
            if not (isinstance(b, str) and a == b):
                return False
        elif a is None:
            if b is not None:
                return False
        elif isinstance(a, list | tuple):
            if not (isinstance(b, list | tuple) and len(a) == len(b)):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, dict):
            if not (isinstance(b, dict) and a.keys() == b.keys()):
                return False
            pending.extend((a[key], b[key]) for key in a)
        elif not _opaque_eq(a, b):
            return False
    return True


def _opaque_eq(a: object, b: object) -> bool:
    """Equality of non-JSON values (datetimes in a Python-built event, say): same type and ==."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _lt(a: object, b: object) -> bool:
    if _is_num(a):
        if not _is_num(b):
            return False
        x, y = _exact_pair(a, b)
        try:
            return bool(x < y)
        except ArithmeticError:  # NaN is unordered
            return False
    return isinstance(a, str) and isinstance(b, str) and a < b


def _le(a: object, b: object) -> bool:
    if _is_num(a):
        if not _is_num(b):
            return False
        x, y = _exact_pair(a, b)
        try:
            return bool(x <= y)
        except ArithmeticError:  # NaN is unordered
            return False
    return isinstance(a, str) and isinstance(b, str) and a <= b


def _in(value: object, container: object) -> bool:
    """``in``: membership by JSON equality in a list; anything else contains nothing."""
    return isinstance(container, list | tuple) and any(_eq(value, item) for item in container)


def _changed(event: Event, steps: tuple[Step, ...]) -> bool:
    """field_changed(): trust ``changed_fields`` when present, else compare old and new data.

    ``changed_fields`` names top-level columns, so a nested path also needs old and new to
    differ there when old_data is known. Without either (an INSERT), nothing changed.
    """
    changed = event.changed_fields
    old = event.old_data
    if isinstance(changed, list | tuple):
        if steps[0][0] not in changed:
            return False
        if len(steps) == 1 or not isinstance(old, dict):
            return True
    elif not isinstance(old, dict):
        return False
    return not _eq(_get(old, steps), _get(_root(event.data), steps))


_NAMESPACE: dict[str, Any] = {
    "__builtins__": {},
    "Decimal": Decimal,
    "Exception": Exception,
    "bool": bool,
    "dict": dict,
    "float": float,
    "int": int,
    "isinstance": isinstance,
    "len": len,
    "list": list,
    "str": str,
    "_NUMBER": _NUMBER,
    "_changed": _changed,
    "_eq": _eq,
    "_get": _get,
    "_has": _has,
    "_in": _in,
    "_in_numbers": _in_numbers,
    "_le": _le,
    "_lt": _lt,
    "_root": _root,
    "_step": _step,
}
