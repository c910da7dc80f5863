"""What validation found: issues with a line and a hint, gathered, never stopping at the first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgobs.errors import ConfigError

Severity = Literal["error", "warning"]
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        at = f" ({self.path})" if self.path else ""
        hint = f" — {self.hint}" if self.hint else ""
        return f"{where}: {self.severity}: {self.message}{at}{hint}"


def render_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass
class Issues:
    """Collects issues while a config is checked; knows the line of every YAML path."""

    file: str
    lines: dict[Path, int]
    found: list[ConfigIssue] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Path, message: str, hint: str | None = None) -> None:
        self._add(path, message, hint, "error")

    def warning(self, path: Path, message: str, hint: str | None = None) -> None:
        self._add(path, message, hint, "warning")

    def _add(self, path: Path, message: str, hint: str | None, severity: Severity) -> None:
        issue = ConfigIssue(
            self.file, self.line_of(path), render_path(path), message, hint, severity
        )
        self.found.append(issue)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.found if i.severity == "error"]


class ConfigInvalid(ConfigError):
    """observers.yaml has errors; ``issues`` lists all of them."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        errors = [i for i in issues if i.severity == "error"]
        first = errors[0] if errors else issues[0]
        more = (
            f" (and {len(errors) - 1} more error(s): run pgobs validate-config)"
            if len(errors) > 1
            else ""
        )
        super().__init__(str(first) + more)
        self.issues = issues
