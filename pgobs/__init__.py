"""pgobs: PostgreSQL-native observers."""

from __future__ import annotations

from pgobs.errors import PermanentError
from pgobs.events import Event
from pgobs.reliability.handlercache import cache

__version__ = "0.1.0"

__all__ = ["Event", "PermanentError", "__version__", "cache"]
