"""Readiness, as the metrics port's ``/readyz`` reports it: the parts of a process register
checks, and the process is ready while every check passes.

A check is called from the HTTP server's thread, so it only reads (an attribute, a flag) and
is quick. It returns None when its part is ready, else the reason it is not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Check = Callable[[], str | None]


class Readiness:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def problems(self) -> list[str]:
        """Why the process is not ready; empty when it is. Nothing registered: still starting."""
        with self._lock:
            checks = list(self._checks.items())
        if not checks:
            return ["starting"]
        found = []
        for name, check in checks:
            try:
                reason = check()
            except Exception as exc:  # a broken check says so instead of killing the server
                reason = f"check failed: {exc!r}"
            if reason is not None:
                found.append(f"{name}: {reason}")
        return found


readiness = Readiness()  # the process's own, as prometheus_client's REGISTRY is
