"""Tokens of the condition language, and the error every bad condition raises.

The lexer does the character-level checks (quotes, escapes, numbers, operators) so that each
error points at the exact column a user has to fix.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import Decimal

from pgobs.errors import EXIT_CONFIGURATION, PgobsError

__all__ = ["ConditionSyntaxError", "Token", "TokenKind", "tokenize"]


class ConditionSyntaxError(PgobsError):
    """A condition that cannot be compiled; ``position`` is the 0-based column of the culprit."""

    exit_code = EXIT_CONFIGURATION

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} at column {self.position}"


class TokenKind(enum.Enum):
    STRING = "string"
    NUMBER = "number"
    NAME = "name"
    TRUE = "true"
    FALSE = "false"
    NULL = "null"
    AND = "&&"
    OR = "||"
    NOT = "!"
    IN = "in"
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    END = "end of condition"


@dataclass(frozen=True, slots=True)
class Token:
    """One token; ``value`` holds the decoded string or number for STRING and NUMBER tokens."""

    kind: TokenKind
    text: str
    position: int
    value: str | int | Decimal | None = None


_KEYWORDS = {
    "and": TokenKind.AND,
    "or": TokenKind.OR,
    "not": TokenKind.NOT,
    "in": TokenKind.IN,
    "true": TokenKind.TRUE,
    "false": TokenKind.FALSE,
    "null": TokenKind.NULL,
    "none": TokenKind.NULL,
}

# Longest first, so that ">=" is never read as ">" followed by "=".
_OPERATORS = (
    ("==", TokenKind.EQ),
    ("!=", TokenKind.NE),
    (">=", TokenKind.GE),
    ("<=", TokenKind.LE),
    ("&&", TokenKind.AND),
    ("||", TokenKind.OR),
    (">", TokenKind.GT),
    ("<", TokenKind.LT),
    ("!", TokenKind.NOT),
    ("(", TokenKind.LPAREN),
    (")", TokenKind.RPAREN),
    ("[", TokenKind.LBRACKET),
    ("]", TokenKind.RBRACKET),
    (",", TokenKind.COMMA),
)

_LONE_OPERATOR_HINTS = {
    "=": "'=' is not an operator; use '==' to compare",
    "&": "'&' is not an operator; use '&&' or 'and'",
    "|": "'|' is not an operator; use '||' or 'or'",
    "-": "'-' is only allowed directly before a number",
}

# A field path: a name, then ".name" or ".<digits>" segments (digits index into lists).
_PATH = re.compile(r"[^\W\d]\w*(?:\.(?:[^\W\d]\w*|[0-9]+(?!\w)))*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Postgres numeric holds up to 131,072 digits before the point; no JSON number it writes is larger.
_MAX_EXPONENT = 131_072

_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "/": "/",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "0": "\0",
}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens, always ending with an END token."""
    tokens: list[Token] = []
    position = 0
    length = len(source)
    while position < length:
        char = source[position]
        if char.isspace():
            position += 1
        elif char in "'\"":
            token = _read_string(source, position)
            tokens.append(token)
            position += len(token.text)
        elif _is_digit(char) or (char == "-" and _is_digit(source[position + 1 : position + 2])):
            token = _read_number(source, position)
            tokens.append(token)
            position += len(token.text)
        elif path := _PATH.match(source, position):
            tokens.append(_name_token(path.group(), position))
            position = path.end()
            if source.startswith(".", position):
                raise ConditionSyntaxError(
                    "expected a field name or list index after '.'", position
                )
        else:
            tokens.append(_read_operator(source, position))
            position += len(tokens[-1].text)
    tokens.append(Token(TokenKind.END, "", length))
    return tokens


def _is_digit(char: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts characters such as '²' that int() rejects."""
    return len(char) == 1 and "0" <= char <= "9"


def _name_token(text: str, position: int) -> Token:
    keyword = _KEYWORDS.get(text.lower()) if "." not in text else None
    return Token(keyword or TokenKind.NAME, text, position)


def _read_operator(source: str, position: int) -> Token:
    for text, kind in _OPERATORS:
        if source.startswith(text, position):
            return Token(kind, text, position)
    char = source[position]
    hint = _LONE_OPERATOR_HINTS.get(char)
    raise ConditionSyntaxError(hint or f"unexpected character {char!r}", position)


def _read_number(source: str, position: int) -> Token:
    match = _NUMBER.match(source, position)
    assert match is not None  # the caller saw a digit, or '-' and a digit
    text = match.group()
    follower = source[match.end() : match.end() + 1]
    if follower == "." or follower.isalnum() or follower == "_":
        raise ConditionSyntaxError(f"malformed number starting {text!r}", position)
    value: int | Decimal
    if "." in text or "e" in text or "E" in text:
        try:
            value = Decimal(text)  # exact: 100.10 must not become the float 100.099999...
        except ArithmeticError:  # an exponent beyond what Decimal can hold
            value = Decimal("Infinity")
        if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
            raise ConditionSyntaxError(f"number {text} is out of range", position)
    else:
        try:
            value = int(text)
        except ValueError:  # beyond Python's int-from-string digit limit
            raise ConditionSyntaxError("number has too many digits", position) from None
    return Token(TokenKind.NUMBER, text, position, value)


def _read_string(source: str, start: int) -> Token:
    quote = source[start]
    chars: list[str] = []
    position = start + 1
    while position < len(source):
        char = source[position]
        if char == quote:
            return Token(TokenKind.STRING, source[start : position + 1], start, "".join(chars))
        if char != "\\":
            chars.append(char)
            position += 1
            continue
        escape = source[position + 1 : position + 2]
        if escape == "u" and _HEX4.fullmatch(source, position + 2, position + 6):
            chars.append(chr(int(source[position + 2 : position + 6], 16)))
            position += 6
        elif escape in _ESCAPES:
            chars.append(_ESCAPES[escape])
            position += 2
        elif not escape:
            break
        else:
            raise ConditionSyntaxError(
                f"unknown escape '\\{escape}' in string; write '\\\\' for a backslash", position
            )
    raise ConditionSyntaxError(f"unterminated string (no closing {quote})", start)
