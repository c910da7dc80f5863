"""The public names are few and deliberate; each one exists."""

from __future__ import annotations

import pgobs
import pgobs.conditions
import pgobs.config


def test_every_exported_name_exists() -> None:
    for module in (pgobs, pgobs.conditions, pgobs.config):
        assert module.__all__ == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_handler_api() -> None:
    assert set(pgobs.__all__) == {"Event", "PermanentError", "__version__", "cache"}
    assert issubclass(pgobs.PermanentError, Exception)
