"""Tokens of the search language (a Lucene subset), and the error every bad query raises.

Errors carry the 1-based column of the culprit, so ``pgobs search`` can say where to look.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pgobs.errors import PgobsError

__all__ = ["QuerySyntaxError", "Token", "TokenKind", "tokenize"]


class QuerySyntaxError(PgobsError):
    """A query that cannot be read: the column (1-based) and what was expected there."""

    exit_code = 2

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column

    def __str__(self) -> str:
        return f"cannot read the query at column {self.column}: {self.message}"


class TokenKind(enum.Enum):
    WORD = "a word"
    PHRASE = "a quoted phrase"
    COLON = "':'"
    CMP = "a comparison"  # >, >=, <, <= right after field:
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    TO = "TO"
    LPAREN = "'('"
    RPAREN = "')'"
    LBRACKET = "'['"
    RBRACKET = "']'"
    LBRACE = "'{'"
    RBRACE = "'}'"
    END = "the end of the query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # decoded: escapes resolved, quotes removed
    column: int  # 1-based
    raw: str = ""  # as typed (a WORD's wildcards are told from escaped ones by it)

    def shown(self) -> str:
        if self.kind is TokenKind.END:
            return str(self.kind.value)
        return repr(self.raw or self.text)


_SINGLE = {
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "[": TokenKind.LBRACKET,
    "]": TokenKind.RBRACKET,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
}
_KEYWORDS = {"AND": TokenKind.AND, "OR": TokenKind.OR, "NOT": TokenKind.NOT, "&&": TokenKind.AND}
_STOP = set(' \t\r\n()[]{}"')
_FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens. A ':' ends a word only where the word can be a field name
    and no value is being read, so ``timestamp:2026-11-28T10:00:00Z`` needs no quotes."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    depth = 0  # inside [ ] or { }: colons belong to the bounds
    while i < n:
        ch = text[i]
        column = i + 1
        if ch.isspace():
            i += 1
            continue
        if ch in _SINGLE:
            kind = _SINGLE[ch]
            if kind in (TokenKind.LBRACKET, TokenKind.LBRACE):
                depth += 1
            elif kind in (TokenKind.RBRACKET, TokenKind.RBRACE):
                depth = max(0, depth - 1)
            tokens.append(Token(kind, ch, column, ch))
            i += 1
            continue
        if ch == '"':
            i, phrase = _phrase(text, i)
            tokens.append(Token(TokenKind.PHRASE, phrase, column, text[column - 1 : i]))
            continue
        if ch == ":":
            tokens.append(Token(TokenKind.COLON, ":", column, ":"))
            i += 1
            if text.startswith((">=", "<="), i):
                tokens.append(Token(TokenKind.CMP, text[i : i + 2], i + 1, text[i : i + 2]))
                i += 2
            elif i < n and text[i] in "<>":
                tokens.append(Token(TokenKind.CMP, text[i], i + 1, text[i]))
                i += 1
            continue
        if ch == "!" and (i + 1 == n or text[i + 1] != "="):
            tokens.append(Token(TokenKind.NOT, "!", column, "!"))
            i += 1
            continue
        if (
            ch == "-"
            and (not tokens or _starts_term(tokens[-1]))
            and i + 1 < n
            and not text[i + 1].isspace()
            and text[i + 1] != "-"
        ):
            tokens.append(Token(TokenKind.NOT, "-", column, "-"))
            i += 1
            continue
        value_position = (
            depth > 0
            or (bool(tokens) and tokens[-1].kind is TokenKind.CMP)
            or (bool(tokens) and tokens[-1].kind is TokenKind.COLON)
        )
        i, word, raw = _word(text, i, value_position)
        if raw == "||":
            tokens.append(Token(TokenKind.OR, raw, column, raw))
        elif raw in _KEYWORDS:
            tokens.append(Token(_KEYWORDS[raw], raw, column, raw))
        elif raw == "TO" and depth > 0:
            tokens.append(Token(TokenKind.TO, raw, column, raw))
        else:
            tokens.append(Token(TokenKind.WORD, word, column, raw))
    tokens.append(Token(TokenKind.END, "", n + 1))
    return tokens


def _starts_term(previous: Token) -> bool:
    """A '-' here is a NOT (``-status:failed``), not part of a word."""
    return previous.kind in (TokenKind.AND, TokenKind.OR, TokenKind.NOT, TokenKind.LPAREN) or (
        previous.kind in (TokenKind.WORD, TokenKind.PHRASE, TokenKind.RPAREN)
    )


def _phrase(text: str, start: int) -> tuple[int, str]:
    i, out = start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return i + 1, "".join(out)
        out.append(ch)
        i += 1
    raise QuerySyntaxError("the quoted phrase is not closed: add '\"' at its end", start + 1)


def _word(text: str, start: int, value_position: bool) -> tuple[int, str, str]:
    """(end, decoded, raw). A backslash escapes the next character (``\\*`` is a literal star;
    the raw text keeps the backslash so that the parser can tell)."""
    i, out = start, []
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise QuerySyntaxError("a '\\' must be followed by the character it escapes", i + 1)
            out.append(text[i + 1])
            i += 2
            continue
        if ch in _STOP:
            break
        if ch == ":" and not value_position and all(c in _FIELD_CHARS for c in out):
            break
        out.append(ch)
        i += 1
    return i, "".join(out), text[start:i]
