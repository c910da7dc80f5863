"""How an action run ended, and the failure classes that decide retry or dead-letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorKind = Literal["transient", "permanent"]


class ActionFailed(Exception):
    """An action did not do its job. ``kind`` decides: retry later, or straight to the DLQ."""

    def __init__(
        self,
        message: str,
        kind: ErrorKind = "transient",
        retry_after_s: float | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.retry_after_s = retry_after_s
        self.status_code = status_code  # the HTTP answer, when there was one


@dataclass(frozen=True, slots=True)
class Failure:
    message: str
    kind: ErrorKind
    retry_after_s: float | None = None
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """An action that did its job; ``status_code`` is the HTTP answer, for those that send one
    (the trail records it)."""

    status_code: int | None = None
