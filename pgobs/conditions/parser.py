"""The condition syntax tree and a recursive-descent parser that builds it.

Grammar, loosest binding first::

    or         := and (("||" | "or") and)*
    and        := not (("&&" | "and") not)*
    not        := ("!" | "not") not | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand]
    operand    := literal | list | path | function "(" arguments ")" | "(" or ")"

``!`` negates a whole comparison (``!status == 'paid'`` is ``!(status == 'paid')``), as in
FraiseQL, whose lexer reads ``field op value`` as one token, and as ``not`` reads in Python and SQL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from pgobs.conditions.lexer import ConditionSyntaxError, Token, TokenKind, tokenize

__all__ = [
    "ENVELOPE_FIELDS",
    "MAX_NESTING",
    "And",
    "Compare",
    "CompareOp",
    "FieldChanged",
    "FieldChangedFrom",
    "FieldChangedTo",
    "HasField",
    "Literal",
    "Node",
    "Not",
    "Or",
    "Path",
    "Root",
    "Scalar",
    "Value",
    "parse",
]

# Numbers are exact: an integer literal is an int, any other a Decimal (100.10 keeps its digits).
Scalar = str | int | Decimal | bool | None
Value = Scalar | tuple[Scalar, ...]

# Envelope fields a condition may read as ``event.<name>`` (attributes of pgobs.events.Event).
ENVELOPE_FIELDS = frozenset({"id", "entity_type", "event_type", "entity_id", "tenant", "actor"})

# Parentheses and negations nest at most this deep: it bounds parser recursion and keeps the
# generated Python within the compiler's own nesting limits.
MAX_NESTING = 32


class Root(enum.Enum):
    """Where a path starts: the new row, the old row, or the event envelope."""

    DATA = "data"
    OLD = "old"
    EVENT = "event"


class CompareOp(enum.Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    NOT_IN = "not in"


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant; a list literal is a tuple of scalars."""

    value: Value


@dataclass(frozen=True, slots=True)
class Path:
    """A field reference; segments made of digits index into lists."""

    root: Root
    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class HasField:
    """``has_field('a.b')``: the path exists in data, even when its value is null."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FieldChanged:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FieldChangedTo:
    path: tuple[str, ...]
    value: Value


@dataclass(frozen=True, slots=True)
class FieldChangedFrom:
    path: tuple[str, ...]
    value: Value


Node = (
    Literal
    | Path
    | Compare
    | Not
    | And
    | Or
    | HasField
    | FieldChanged
    | FieldChangedTo
    | FieldChangedFrom
)

_COMPARE_OPS = {
    TokenKind.EQ: CompareOp.EQ,
    TokenKind.NE: CompareOp.NE,
    TokenKind.LT: CompareOp.LT,
    TokenKind.LE: CompareOp.LE,
    TokenKind.GT: CompareOp.GT,
    TokenKind.GE: CompareOp.GE,
    TokenKind.IN: CompareOp.IN,
}
_KEYWORD_VALUES: dict[TokenKind, Scalar] = {
    TokenKind.TRUE: True,
    TokenKind.FALSE: False,
    TokenKind.NULL: None,
}
_LITERAL_STARTS = {TokenKind.STRING, TokenKind.NUMBER, TokenKind.LBRACKET, *_KEYWORD_VALUES}
_ROOT_PREFIXES = {"data": Root.DATA, "old": Root.OLD, "old_data": Root.OLD, "event": Root.EVENT}


def parse(source: str) -> Node:
    """Parse a condition; raises ConditionSyntaxError naming the column at fault."""
    if not source.strip():
        raise ConditionSyntaxError("empty condition", 0)
    return _Parser(tokenize(source)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    @property
    def _current(self) -> Token:
        return self._tokens[self._index]

    def _advance(self) -> Token:
        token = self._tokens[self._index]
        if token.kind is not TokenKind.END:
            self._index += 1
        return token

    def _accept(self, kind: TokenKind) -> bool:
        if self._current.kind is not kind:
            return False
        self._advance()
        return True

    def _expect(self, kind: TokenKind, after: str) -> Token:
        if self._current.kind is not kind:
            raise self._unexpected(f"'{kind.value}' {after}")
        return self._advance()

    def _unexpected(self, wanted: str) -> ConditionSyntaxError:
        token = self._current
        if token.kind is TokenKind.END:
            return ConditionSyntaxError(
                f"expected {wanted}, but the condition ended", token.position
            )
        return ConditionSyntaxError(f"expected {wanted}, found {token.text!r}", token.position)

    def _nested(self, token: Token) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise ConditionSyntaxError(
                f"condition nests deeper than {MAX_NESTING} levels; simplify it", token.position
            )

    def parse(self) -> Node:
        node = self._or()
        if self._current.kind is TokenKind.RPAREN:
            raise ConditionSyntaxError("')' has no matching '('", self._current.position)
        if self._current.kind is not TokenKind.END:
            raise self._unexpected("'&&', '||' or the end of the condition")
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while self._current.kind is TokenKind.OR:
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> Node:
        operands = [self._not()]
        while self._current.kind is TokenKind.AND:
            self._advance()
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _not(self) -> Node:
        if self._current.kind is not TokenKind.NOT:
            return self._comparison()
        self._nested(self._advance())
        node = Not(self._not())
        self._depth -= 1
        return node

    def _comparison(self) -> Node:
        left = self._operand()
        token = self._current
        if token.kind is TokenKind.NOT and self._tokens[self._index + 1].kind is TokenKind.IN:
            self._advance()
            op = CompareOp.NOT_IN
        elif token.kind in _COMPARE_OPS:
            op = _COMPARE_OPS[token.kind]
        else:
            return left
        self._advance()
        right = self._operand()
        is_membership = op is CompareOp.IN or op is CompareOp.NOT_IN
        if is_membership and isinstance(right, Literal) and not isinstance(right.value, tuple):
            raise ConditionSyntaxError(
                f"'{op.value}' needs a list, e.g. status in ['paid', 'shipped']", token.position
            )
        if self._current.kind in _COMPARE_OPS:
            raise ConditionSyntaxError(
                "comparisons cannot be chained; join them with '&&'", self._current.position
            )
        return Compare(op, left, right)

    def _operand(self) -> Node:
        token = self._current
        if token.kind is TokenKind.LPAREN:
            self._nested(self._advance())
            node = self._or()
            if self._current.kind is not TokenKind.RPAREN:
                if self._current.kind is TokenKind.END:
                    raise ConditionSyntaxError("'(' is never closed", token.position)
                raise self._unexpected("')'")
            self._advance()
            self._depth -= 1
            return node
        if token.kind is TokenKind.NAME:
            self._advance()
            if self._current.kind is TokenKind.LPAREN:
                return self._call(token)
            return _path(token)
        if token.kind in _LITERAL_STARTS:
            return Literal(self._literal())
        raise self._unexpected("a value, a field or a function call")

    def _literal(self) -> Value:
        if self._current.kind is not TokenKind.LBRACKET:
            return self._scalar()
        opening = self._advance()
        items: list[Scalar] = []
        while not self._accept(TokenKind.RBRACKET):
            # Read the token afresh: mypy keeps the narrowing of self._current from above.
            if self._tokens[self._index].kind is TokenKind.END:
                raise ConditionSyntaxError("'[' is never closed", opening.position)
            if items:
                self._expect(TokenKind.COMMA, "between list items")
            items.append(self._scalar())
        return tuple(items)

    def _scalar(self) -> Scalar:
        token = self._current
        if token.kind is TokenKind.STRING or token.kind is TokenKind.NUMBER:
            self._advance()
            return token.value
        if token.kind in _KEYWORD_VALUES:
            self._advance()
            return _KEYWORD_VALUES[token.kind]
        raise self._unexpected("a string, a number, true, false or null")

    def _call(self, name: Token) -> Node:
        function = _FUNCTIONS.get(name.text)
        if function is None:
            known = ", ".join(sorted(_FUNCTIONS))
            raise ConditionSyntaxError(
                f"unknown function {name.text!r}; known functions: {known}", name.position
            )
        arity, build = function
        self._advance()
        path_token = self._current
        if path_token.kind is not TokenKind.STRING:
            raise self._unexpected(f"a quoted field path as the first argument of {name.text}()")
        self._advance()
        path = _function_path(path_token)
        value: Value = None
        if arity == 2:
            self._expect(TokenKind.COMMA, f"and a value: {name.text}() takes two arguments")
            value = self._literal()
        self._expect(TokenKind.RPAREN, f"to close {name.text}(), which takes {arity} argument(s)")
        return build(path, value)


def _path(token: Token) -> Path:
    segments = tuple(token.text.split("."))
    root = _ROOT_PREFIXES.get(segments[0])
    if root is None:
        return Path(Root.DATA, segments)
    if len(segments) == 1:
        raise ConditionSyntaxError(
            f"{token.text!r} needs a field after it, e.g. {token.text}.status "
            f"(write data.{token.text} for a field named {token.text!r})",
            token.position,
        )
    if root is Root.EVENT and (segments[1] not in ENVELOPE_FIELDS or len(segments) > 2):
        known = ", ".join(sorted(ENVELOPE_FIELDS))
        raise ConditionSyntaxError(
            f"unknown envelope field {token.text!r}; known: event.{{{known}}}", token.position
        )
    return Path(root, segments[1:])


def _function_path(token: Token) -> tuple[str, ...]:
    assert isinstance(token.value, str)
    segments = tuple(token.value.split("."))
    if not all(segments):
        raise ConditionSyntaxError(
            f"field path {token.text} has an empty segment; write e.g. 'customer.email'",
            token.position,
        )
    return segments


_FUNCTIONS: dict[str, tuple[int, Callable[[tuple[str, ...], Value], Node]]] = {
    "has_field": (1, lambda path, _: HasField(path)),
    "field_changed": (1, lambda path, _: FieldChanged(path)),
    "field_changed_to": (2, FieldChangedTo),
    "field_changed_from": (2, FieldChangedFrom),
}
