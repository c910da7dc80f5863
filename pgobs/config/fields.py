"""Reading one YAML mapping field by field, recording every problem with its line.

Every accessor returns a usable value even when the input is wrong, so validation goes on and
reports all errors at once. ``finish()`` reports the keys nobody asked for.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

from pgobs.config.report import Issues, Path

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


class Fields:
    def __init__(
        self, raw: Any, path: Path, issues: Issues, what: str, *, strict_env: bool
    ) -> None:
        self.path = path
        self.issues = issues
        self.what = what
        self.strict_env = strict_env
        self.ok = isinstance(raw, dict)
        if not self.ok:
            issues.error(
                path, f"{what} must be a mapping, got {_kind(raw)}", "write key: value lines"
            )
        self.raw: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        self._read: set[Any] = set()

    def at(self, key: str | int) -> Path:
        return (*self.path, key)

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str) -> Any:
        self._read.add(key)
        return self.raw.get(key)

    def _typed(self, key: str, kind: type, required: bool, hint: str | None) -> Any:
        value = self.get(key)
        if value is None:
            if required and key not in self.raw:
                self.issues.error(self.at(key), f"{self.what} needs '{key}'", hint)
            elif required:
                self.issues.error(self.at(key), f"'{key}' must not be empty", hint)
            return None
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            self.issues.error(
                self.at(key), f"'{key}' must be {_TYPE_NAMES[kind]}, got {_kind(value)}", hint
            )
            return None
        return value

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: tuple[str, ...] | None = None,
        hint: str | None = None,
    ) -> str | None:
        value = self._typed(key, str, required, hint)
        if value is None:
            return default
        if choices is not None and value not in choices:
            self.issues.error(
                self.at(key), f"'{key}' must be one of {', '.join(choices)}, got {value!r}", hint
            )
            return default
        return str(value)

    def integer(
        self, key: str, *, default: int, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self._typed(key, int, False, None)
        if value is None:
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.issues.error(self.at(key), f"'{key}' must be {bound}, got {value}")
            return default
        return int(value)

    def duration(
        self, key: str, *, default: float, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        """A human duration in seconds: ``500ms``, ``30s``, ``5m``, ``1h``, ``2d`` (or a number of
        seconds)."""
        value = self.get(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.issues.error(
                self.at(key),
                f"'{key}' must be a duration, got {value!r}",
                "write a number with a unit: 500ms, 30s, 5m, 1h, 2d",
            )
            return default
        if seconds < minimum or (maximum is not None and seconds > maximum):
            bound = (
                f"between {_human(minimum)} and {_human(maximum)}"
                if maximum is not None
                else f"at least {_human(minimum)}"
            )
            self.issues.error(self.at(key), f"'{key}' must be {bound}, got {value!r}")
            return default
        return seconds

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._typed(key, bool, False, None)
        return default if value is None else bool(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._typed(key, dict, False, None)
        return value if value is not None else {}

    def string_map(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.mapping(key).items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.issues.error((*self.at(key), name), f"'{key}.{name}' must be a string")
                continue
            out[str(name)] = str(value)
        return out

    def string_list(self, key: str, *, required: bool = False) -> list[str]:
        value = self.get(key)
        if value is None:
            if required:
                self.issues.error(self.at(key), f"{self.what} needs '{key}'")
            return []
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                path = (*self.at(key), i) if isinstance(value, list) else self.at(key)
                self.issues.error(path, f"'{key}' must hold strings, got {_kind(item)}")
                continue
            out.append(item)
        return out

    def env_name(self, key: str, *, required: bool = False, hint: str | None = None) -> str | None:
        """A ``*_env`` field: the name of an environment variable that must be set to run."""
        name = self.string(key, required=required, hint=hint)
        if name is not None and name not in os.environ:
            message = f"environment variable {name} (named by '{key}') is not set"
            fix = f"export {name}=... before starting the worker"
            if self.strict_env:
                self.issues.error(self.at(key), message, fix)
            else:
                self.issues.warning(self.at(key), message, fix)
        return name

    def one_of(self, *keys: str, hint: str) -> None:
        """Exactly one of ``keys`` must be present."""
        present = [k for k in keys if self.raw.get(k) is not None]
        if not present:
            self.issues.error(self.path, f"{self.what} needs one of {', '.join(keys)}", hint)
        elif len(present) > 1:
            self.issues.error(self.at(present[1]), f"give only one of {', '.join(present)}", hint)

    def finish(self) -> None:
        known = sorted(k for k in self._read if isinstance(k, str))
        for key in self.raw:
            if key in self._read:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            self.issues.error(self.at(key), f"unknown key '{key}' in {self.what}", hint)


def expand_env(text: str, path: Path, issues: Issues, *, strict_env: bool) -> str:
    """Replace ``${NAME}`` with the environment's value; an unset name is reported."""
    out = []
    rest = text
    while "${" in rest:
        before, _, tail = rest.partition("${")
        name, closed, after = tail.partition("}")
        if not closed:
            issues.error(path, "unterminated ${ in a value", "write ${NAME}")
            return text
        out.append(before)
        value = os.environ.get(name)
        if value is None:
            message = f"environment variable {name} (used as ${{{name}}}) is not set"
            (issues.error if strict_env else issues.warning)(path, message, f"export {name}=...")
            value = ""
        out.append(value)
        rest = after
    out.append(rest)
    return "".join(out)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float | None:
    """Seconds in ``value`` (``500ms``, ``30s``, ``5m``, ``1h``, ``2d``, bare seconds), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _DURATION.fullmatch(value)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _human(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        dict: "a mapping",
        list: "a list",
    }
    return names.get(type(value), type(value).__name__)
