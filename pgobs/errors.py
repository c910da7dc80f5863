"""Errors a user can cause. Each names the cause and the fix; the CLI prints one line for them.

Every error class carries its exit code, so one place (``pgobs.cli.app.main``) turns any of them
into a line on stderr and the code scripts can tell apart:

    1  general: anything else (a bad option, a refusal of the database, an unhealthy status)
    2  configuration: observers.yaml, a setting or a command-line option is invalid, missing or
       unreadable (cyclopts, which parses the command line, exits 2 on its own errors too)
    3  connection: Postgres (or another server pgobs needs) cannot be reached
    4  validation failed: ``pgobs validate-config`` found errors
    5  not found: an id given on the command line names nothing
"""

from __future__ import annotations

EXIT_GENERAL = 1
EXIT_CONFIGURATION = 2
EXIT_CONNECTION = 3
EXIT_VALIDATION_FAILED = 4
EXIT_NOT_FOUND = 5


class PgobsError(Exception):
    """Base class of every error pgobs reports to a user as one line and a non-zero exit."""

    exit_code = EXIT_GENERAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConnectionFailed(PgobsError):
    """Postgres could not be reached or refused the connection."""

    exit_code = EXIT_CONNECTION


class ConfigError(PgobsError):
    """observers.yaml (or a setting) is invalid."""

    exit_code = EXIT_CONFIGURATION


class BadOption(PgobsError):
    """A command-line option or argument has a value the command cannot use."""

    exit_code = EXIT_CONFIGURATION


class ValidationFailed(PgobsError):
    """``validate-config`` found errors (it has printed them)."""

    exit_code = EXIT_VALIDATION_FAILED


class NotFound(PgobsError):
    """An id given on the command line names nothing."""

    exit_code = EXIT_NOT_FOUND


class PermanentError(Exception):
    """Raised by a ``python`` action handler: do not retry, dead-letter the job at once."""
