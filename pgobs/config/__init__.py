"""observers.yaml: the observer model here; loading and validation in ``pgobs.config.loader``
(kept out of this module so action specs can use the field reader without a cycle)."""

from __future__ import annotations

from pgobs.config.model import Config, Observer, RetryPolicy
from pgobs.config.report import ConfigInvalid, ConfigIssue

__all__ = ["Config", "ConfigInvalid", "ConfigIssue", "Observer", "RetryPolicy"]
