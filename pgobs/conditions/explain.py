"""Evaluate a condition step by step, keeping every sub-expression's value: the answer to "why
did this observer not match?" (``pgobs debug-event``).

It walks the syntax tree with the same runtime helpers the compiled function calls, so its
verdict is the compiled condition's (a unit test holds the two together); it is slower, and
meant for one event at a time, never the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, assert_never

from pgobs import jsoncodec
from pgobs.conditions.compiler import (
    _changed,
    _compare_constants,
    _get,
    _has,
    _root,
    _steps,
)
from pgobs.conditions.parser import (
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
    Value,
    parse,
)
from pgobs.events import Event

__all__ = ["Explained", "explain"]


@dataclass(frozen=True, slots=True)
class Explained:
    """One sub-expression: its text, the value it had for the event, and its own parts."""

    expression: str
    value: Any
    parts: tuple[Explained, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"expression": self.expression, "value": self.value}
        if self.parts:
            doc["parts"] = [p.as_json() for p in self.parts]
        return doc

    def lines(self, indent: str = "") -> list[str]:
        """``expression → value``, one line a sub-expression, parts indented below."""
        out = [f"{indent}{self.expression} → {render_value(self.value)}"]
        for part in self.parts:
            out.extend(part.lines(indent + "  "))
        return out


def explain(source: str, event: Event) -> Explained:
    """The condition's verdict for ``event`` (``value`` is a bool) with every part's value."""
    tree = parse(source)
    try:
        return _Walker(event).test(tree)
    except Exception as exc:  # the compiled condition returns False here; say why
        return Explained(source, False, (Explained(f"error: {exc}", None),))


def render_value(value: Any) -> str:
    """A value as the condition language spells it: 'text', 100.10, true, null, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # quoted as the lexer reads it back
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Decimal):
        return jsoncodec.number_text(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(render_value, value)) + "]"
    try:
        return jsoncodec.encode(value).decode()  # an object: JSON, numbers exact
    except TypeError:
        return str(value)


def render(node: Node) -> str:
    """The condition text of ``node``, normalized (spacing, parentheses where needed)."""
    match node:
        case Literal(value=value):
            return render_value(value)
        case Path(root=root, segments=segments):
            name = ".".join(segments)
            return name if root is Root.DATA else f"{root.value}.{name}"
        case Compare(op=op, left=left, right=right):
            return f"{_side(left)} {op.value} {_side(right)}"
        case Not(operand=operand):
            text = render(operand)
            return f"!({text})" if isinstance(operand, And | Or | Compare) else f"!{text}"
        case And(operands=operands):
            return " && ".join(_operand(o) for o in operands)
        case Or(operands=operands):
            return " || ".join(_operand(o) for o in operands)
        case HasField(path=path):
            return f"has_field('{'.'.join(path)}')"
        case FieldChanged(path=path):
            return f"field_changed('{'.'.join(path)}')"
        case FieldChangedTo(path=path, value=value):
            return f"field_changed_to('{'.'.join(path)}', {render_value(value)})"
        case FieldChangedFrom(path=path, value=value):
            return f"field_changed_from('{'.'.join(path)}', {render_value(value)})"
        case _:
            assert_never(node)


def _side(node: Node) -> str:
    """A comparison's operand: one that is itself a test needs parentheses (``!a == b`` reads
    as ``!(a == b)``, and comparisons do not chain)."""
    text = render(node)
    return f"({text})" if isinstance(node, And | Or | Compare | Not) else text


def _operand(node: Node) -> str:
    text = render(node)
    return f"({text})" if isinstance(node, And | Or) else text


class _Walker:
    def __init__(self, event: Event) -> None:
        self._event = event
        self._data = _root(event.data)
        self._old = _root(event.old_data)

    def test(self, node: Node) -> Explained:
        """``node`` as a bool, with its parts."""
        match node:
            case Literal(value=value):
                return Explained(render(node), bool(value))
            case Path():
                seen = self.value(node)
                return Explained(render(node), bool(seen.value), (seen,))
            case Compare(op=op, left=left, right=right):
                parts = [
                    self.value(side) for side in (left, right) if not isinstance(side, Literal)
                ]
                result = _compare_constants(op, self._value_of(left), self._value_of(right))
                return Explained(render(node), result, tuple(parts))
            case Not(operand=operand):
                inner = self.test(operand)
                return Explained(render(node), not inner.value, (inner,))
            case And(operands=operands) | Or(operands=operands):
                parts = [self.test(o) for o in operands]  # every part, to show them all
                verdicts = [bool(p.value) for p in parts]
                result = all(verdicts) if isinstance(node, And) else any(verdicts)
                return Explained(render(node), result, tuple(parts))
            case HasField(path=path):
                return Explained(render(node), _has(self._data, _steps(path)))
            case FieldChanged(path=path):
                changed = _changed(self._event, _steps(path))
                return Explained(render(node), changed, self._old_and_new(path))
            case FieldChangedTo(path=path, value=value) | FieldChangedFrom(path=path, value=value):
                root = self._data if isinstance(node, FieldChangedTo) else self._old
                at_path = _get(root, _steps(path))
                result = _compare_constants(CompareOp.EQ, at_path, value) and _changed(
                    self._event, _steps(path)
                )
                return Explained(render(node), result, self._old_and_new(path))
            case _:
                assert_never(node)

    def value(self, node: Node) -> Explained:
        """A path's or literal's JSON value; any other node's bool."""
        if isinstance(node, Literal | Path):
            return Explained(render(node), self._value_of(node))
        return self.test(node)

    def _value_of(self, node: Node) -> Value | Any:
        match node:
            case Literal(value=value):
                return value
            case Path(root=Root.EVENT, segments=(name,)):
                return getattr(self._event, name)
            case Path(root=root, segments=segments):
                return _get(self._data if root is Root.DATA else self._old, _steps(segments))
            case _:
                return self.test(node).value

    def _old_and_new(self, path: tuple[str, ...]) -> tuple[Explained, ...]:
        name = ".".join(path)
        return (
            Explained(f"old.{name}", _get(self._old, _steps(path))),
            Explained(name, _get(self._data, _steps(path))),
            Explained("changed_fields", self._event.changed_fields),
        )
