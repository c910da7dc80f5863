"""Errors a user can cause. Each names the cause and the fix; the CLI prints one line for them."""

from __future__ import annotations


class PgobsError(Exception):
    """Base class of every error pgobs reports to a user as one line and a non-zero exit."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConnectionFailed(PgobsError):
    """Postgres could not be reached or refused the connection."""


class ConfigError(PgobsError):
    """observers.yaml (or a CLI option) is invalid."""


class NotFound(PgobsError):
    """An id given on the command line names nothing."""


class PermanentError(Exception):
    """Raised by a ``python`` action handler: do not retry, dead-letter the job at once."""
