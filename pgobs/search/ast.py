"""A parsed query: fields resolved, values typed. Both backends translate this, never text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

__all__ = [
    "All",
    "And",
    "DataLike",
    "DataMatch",
    "DataRange",
    "Instant",
    "Like",
    "Match",
    "Node",
    "Not",
    "Or",
    "Range",
    "Relative",
    "Star",
    "Text",
    "TimeValue",
    "Value",
]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Relative:
    """``now``, ``now-1d``, ``now+15m``: an offset from the moment the query runs."""

    amount: int  # signed
    unit: str  # s m h d w

    @property
    def seconds(self) -> int:
        return self.amount * UNIT_SECONDS[self.unit]

    def es(self) -> str:
        """Elasticsearch date math for the same moment."""
        return "now" if self.amount == 0 else f"now{self.amount:+d}{self.unit}"


@dataclass(frozen=True, slots=True)
class Instant:
    at: datetime  # always timezone-aware


TimeValue = Instant | Relative
Value = str | Decimal | TimeValue


class Star:
    """A ``*`` in a wildcard pattern: any run of characters."""

    def __repr__(self) -> str:
        return "STAR"


class One:
    """A ``?`` in a wildcard pattern: exactly one character."""

    def __repr__(self) -> str:
        return "ONE"


STAR = Star()
ONE = One()
Pattern = tuple[str | Star | One, ...]


@dataclass(frozen=True, slots=True)
class Match:
    """``field:value``: the field equals one of ``values`` (a status word may stand for
    several). ``observer`` on an event record means any observer it matched."""

    field: str
    values: tuple[str | Decimal, ...]


@dataclass(frozen=True, slots=True)
class Like:
    field: str
    pattern: Pattern


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    low: Value | None  # None: open
    high: Value | None
    low_inclusive: bool = True
    high_inclusive: bool = True


@dataclass(frozen=True, slots=True)
class DataMatch:
    """``data.a.b:value``: the event's data at the path is the string ``value``, or the
    number or boolean it spells."""

    path: tuple[str, ...]
    value: str


@dataclass(frozen=True, slots=True)
class DataLike:
    path: tuple[str, ...]
    pattern: Pattern  # matches string values only


@dataclass(frozen=True, slots=True)
class DataRange:
    """Numbers compare as numbers when both given bounds are numbers; else strings compare as
    text (a value of the other type never matches)."""

    path: tuple[str, ...]
    low: str | Decimal | None
    high: str | Decimal | None
    low_inclusive: bool = True
    high_inclusive: bool = True


@dataclass(frozen=True, slots=True)
class Text:
    """A bare word (full text): ``mode`` word, phrase (words in order) or prefix (``time*``)."""

    words: tuple[str, ...]
    mode: Literal["word", "phrase", "prefix"]


@dataclass(frozen=True, slots=True)
class All:
    """``*``: every record."""


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = Match | Like | Range | DataMatch | DataLike | DataRange | Text | All | And | Or | Not
