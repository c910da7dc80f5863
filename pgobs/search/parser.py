"""The search language: a Lucene subset, parsed into ``pgobs.search.ast`` with fields resolved.

    query   := or
    or      := and ( "OR" and )*
    and     := unary ( ["AND"] unary )*          adjacent terms are ANDed
    unary   := ("NOT" | "!" | "-") unary | primary
    primary := "(" or ")" | FIELD ":" value | FIELD ":" range | FIELD ":" CMP bound | text
    value   := WORD (with * and ? wildcards) | "phrase"
    range   := ("[" | "{") bound "TO" bound ("]" | "}")     bound may be *
    text    := WORD | "phrase"                              full text over the record

Every error names the column and what was expected there, in one line.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

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
    One,
    Or,
    Pattern,
    Range,
    Relative,
    Star,
    Text,
    TimeValue,
    Value,
)
from pgobs.search.fields import (
    EVENT_TYPE_ALIASES,
    FIELD_ALIASES,
    FIELDS,
    STATUS_GROUPS,
    STATUSES,
    FieldKind,
)
from pgobs.search.lexer import QuerySyntaxError, Token, TokenKind, tokenize

__all__ = ["MAX_NESTING", "normalize_words", "parse", "parse_time"]

MAX_NESTING = 64
_RELATIVE = re.compile(r"^now(?:([+-])(\d{1,9})([smhdw]))?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WORDS = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATA_KEY = re.compile(r"^[^.\s]+$")


def normalize_words(text: str) -> tuple[str, ...]:
    """Full text sees lowercase runs of letters and digits: the same split on both backends
    (pgobs.trail_text in 0008 feeds Postgres' tsvector and Elasticsearch alike)."""
    return tuple(_WORDS.findall(text.lower()))


def parse(text: str) -> Node:
    if not text.strip():
        raise QuerySyntaxError("the query is empty: give a field:value or words to find", 1)
    return _Parser(tokenize(text)).parse()


def parse_time(text: str, column: int = 1) -> TimeValue:
    """``now``, ``now-15m``, ``now+1d``, ``2026-11-28``, ``2026-11-28T10:00:00Z`` (a time without
    an offset is UTC)."""
    match = _RELATIVE.match(text)
    if match:
        if match.group(1) is None:
            return Relative(0, "s")
        amount = int(match.group(2)) * (-1 if match.group(1) == "-" else 1)
        return Relative(amount, match.group(3))
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise QuerySyntaxError(
            f"expected a time (now, now-1d, now-15m, 2026-11-28, 2026-11-28T10:00:00Z), "
            f"found {text!r}",
            column,
        ) from None
    return Instant(at if at.tzinfo is not None else at.replace(tzinfo=UTC))


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, kind: TokenKind, what: str) -> Token:
        if self.tok.kind is not kind:
            self.fail(what)
        return self.advance()

    def fail(self, what: str) -> None:
        raise QuerySyntaxError(f"expected {what}, found {self.tok.shown()}", self.tok.column)

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind is not TokenKind.END:
            if self.tok.kind is TokenKind.RPAREN:
                raise QuerySyntaxError("this ')' closes no '('", self.tok.column)
            self.fail("AND, OR or the end of the query")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.tok.kind is TokenKind.OR:
            self.advance()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.unary()]
        while True:
            if self.tok.kind is TokenKind.AND:
                self.advance()
            elif self.tok.kind in (TokenKind.END, TokenKind.OR, TokenKind.RPAREN):
                break
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        if self.tok.kind is TokenKind.NOT:
            self.nest(self.advance().column)
            item = self.unary()
            self.depth -= 1
            return Not(item)
        return self.primary()

    def nest(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise QuerySyntaxError(f"the query nests deeper than {MAX_NESTING} levels", column)

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind is TokenKind.LPAREN:
            self.advance()
            self.nest(tok.column)
            if self.tok.kind is TokenKind.RPAREN:
                self.fail("a term inside '( )'")
            node = self.or_()
            self.depth -= 1
            if self.tok.kind is not TokenKind.RPAREN:
                self.fail(f"')' to close the '(' at column {tok.column}")
            self.advance()
            return node
        if tok.kind is TokenKind.PHRASE:
            self.advance()
            return _text(tok, phrase=True)
        if tok.kind is TokenKind.WORD:
            self.advance()
            if self.tok.kind is TokenKind.COLON:
                self.advance()
                return self.field_term(tok)
            if tok.raw == "*":
                return All()
            return _text(tok, phrase=False)
        self.fail("a field:value, a word or '('")
        raise AssertionError("unreachable")

    # -- field:... -------------------------------------------------------------------------

    def field_term(self, name_tok: Token) -> Node:
        name = name_tok.text
        if name.startswith("data."):
            path = tuple(name.split(".")[1:])
            if not path or not all(_DATA_KEY.match(p) for p in path):
                raise QuerySyntaxError(
                    f"expected a path after 'data.' such as data.customer.id, found {name!r}",
                    name_tok.column,
                )
            return self.data_term(path)
        field = FIELD_ALIASES.get(name, name)
        if field not in FIELDS:
            known = ", ".join([*FIELDS, "event_kind", "data.<path>"])
            raise QuerySyntaxError(
                f"unknown field {name!r}: use one of {known} (data.{name} searches the "
                "event's row)",
                name_tok.column,
            )
        tok = self.tok
        if tok.kind in (TokenKind.LBRACKET, TokenKind.LBRACE):
            low, high, low_inc, high_inc = self.range_bounds()
            return Range(
                field,
                self.typed(field, low),
                self.typed(field, high),
                low_inc,
                high_inc,
            )
        if tok.kind is TokenKind.CMP:
            op = self.advance().text
            bound_tok = self.value_token(f"a value after {name}:{op}")
            bound = self.typed(field, bound_tok)
            if bound is None:
                raise QuerySyntaxError(f"expected a value after {name}:{op}", bound_tok.column)
            if op.startswith(">"):
                return Range(field, bound, None, op == ">=", True)
            return Range(field, None, bound, True, op == "<=")
        value_tok = self.value_token(f'a value after {name}: (a word, "a phrase" or [a TO b])')
        return self.field_value(field, value_tok)

    def value_token(self, what: str) -> Token:
        if self.tok.kind not in (TokenKind.WORD, TokenKind.PHRASE):
            self.fail(what)
        return self.advance()

    def field_value(self, field: str, tok: Token) -> Node:
        kind = FIELDS[field].kind
        pattern = _pattern(tok)
        if pattern == (STAR,):
            return Range(field, None, None)  # field:* → the field is present
        if pattern is not None:
            if kind is not FieldKind.KEYWORD:
                raise QuerySyntaxError(
                    f"wildcards work on text fields only; {field} takes a "
                    f"{kind.value}: use a range such as {field}:[a TO b]",
                    tok.column,
                )
            return Like(field, pattern)
        if kind is FieldKind.TIME:
            at = parse_time(tok.text, tok.column)
            if isinstance(at, Instant) and _DATE.match(tok.text):
                return Range(field, at, Instant(at.at + timedelta(days=1)), True, False)
            return Range(field, at, at)
        if kind is FieldKind.NUMBER:
            return Match(field, (_number(tok, field),))
        if field == "status":
            if tok.text not in STATUSES and tok.text not in STATUS_GROUPS:
                raise QuerySyntaxError(
                    f"unknown status {tok.text!r}: use one of "
                    + ", ".join(sorted({*STATUSES, *STATUS_GROUPS})),
                    tok.column,
                )
            return Match(field, STATUS_GROUPS.get(tok.text, (tok.text,)))
        if field == "event_type":
            return Match(field, (EVENT_TYPE_ALIASES.get(tok.text.lower(), tok.text),))
        return Match(field, (tok.text,))

    def range_bounds(self) -> tuple[Token | None, Token | None, bool, bool]:
        opening = self.advance()
        low = self.bound()
        self.expect(TokenKind.TO, "TO between the bounds of a range, as in [a TO b]")
        high = self.bound()
        if self.tok.kind not in (TokenKind.RBRACKET, TokenKind.RBRACE):
            self.fail(f"']' or '}}' to close the range opened at column {opening.column}")
        closing = self.advance()
        return (
            low,
            high,
            opening.kind is TokenKind.LBRACKET,
            closing.kind is TokenKind.RBRACKET,
        )

    def bound(self) -> Token | None:
        tok = self.value_token("a bound: a value or *")
        return None if tok.kind is TokenKind.WORD and tok.raw == "*" else tok

    def typed(self, field: str, tok: Token | None) -> Value | None:
        if tok is None:
            return None
        kind = FIELDS[field].kind
        if kind is FieldKind.TIME:
            return parse_time(tok.text, tok.column)
        if kind is FieldKind.NUMBER:
            return _number(tok, field)
        return tok.text

    # -- data.<path>:... ---------------------------------------------------------------------

    def data_term(self, path: tuple[str, ...]) -> Node:
        shown = "data." + ".".join(path)
        if self.tok.kind in (TokenKind.LBRACKET, TokenKind.LBRACE):
            low, high, low_inc, high_inc = self.range_bounds()
            lo, hi = _data_bound(low), _data_bound(high)
            if isinstance(lo, Decimal) != isinstance(hi, Decimal) and None not in (lo, hi):
                raise QuerySyntaxError(
                    f"the bounds of {shown} must both be numbers or both be text",
                    (low or high or self.tok).column,
                )
            return DataRange(path, lo, hi, low_inc, high_inc)
        if self.tok.kind is TokenKind.CMP:
            op = self.advance().text
            bound = _data_bound(self.value_token(f"a value after {shown}:{op}"))
            if op.startswith(">"):
                return DataRange(path, bound, None, op == ">=", True)
            return DataRange(path, None, bound, True, op == "<=")
        tok = self.value_token(f'a value after {shown}: (a word, "a phrase" or [a TO b])')
        pattern = _pattern(tok)
        if pattern is not None:
            if pattern == (STAR,):
                return DataRange(path, None, None)
            return DataLike(path, pattern)
        return DataMatch(path, tok.text)


def _number(tok: Token, field: str) -> Decimal:
    if not _NUMBER.match(tok.text):
        raise QuerySyntaxError(f"{field} takes a number, found {tok.text!r}", tok.column)
    return Decimal(tok.text)


def _data_bound(tok: Token | None) -> str | Decimal | None:
    if tok is None:
        return None
    if tok.kind is TokenKind.WORD and _NUMBER.match(tok.text):
        try:
            return Decimal(tok.text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            return tok.text
    return tok.text


def _pattern(tok: Token) -> Pattern | None:
    """The wildcard pattern of an unquoted word, or None when it has no unescaped * or ?."""
    if tok.kind is not TokenKind.WORD:
        return None
    parts: list[str | Star | One] = []
    literal: list[str] = []
    raw, i, wild = tok.raw, 0, False
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            literal.append(raw[i + 1])
            i += 2
            continue
        if ch in "*?":
            wild = True
            if literal:
                parts.append("".join(literal))
                literal = []
            mark = STAR if ch == "*" else ONE
            if not (mark is STAR and parts and parts[-1] is STAR):
                parts.append(mark)
        else:
            literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts) if wild else None


def _text(tok: Token, *, phrase: bool) -> Text:
    pattern = _pattern(tok)
    if pattern is not None:
        if len(pattern) != 2 or not isinstance(pattern[0], str) or pattern[1] is not STAR:
            raise QuerySyntaxError(
                f"in full text only a word ending in * is a wildcard (time*), found {tok.raw!r}",
                tok.column,
            )
        words = normalize_words(pattern[0])
        if len(words) != 1:
            raise QuerySyntaxError(
                f"a full-text wildcard takes one word of letters and digits, found {tok.raw!r}",
                tok.column,
            )
        return Text(words, "prefix")
    words = normalize_words(tok.text)
    if not words:
        raise QuerySyntaxError(f"{tok.shown()} has no letters or digits to search for", tok.column)
    return Text(words, "phrase" if phrase or len(words) > 1 else "word")
