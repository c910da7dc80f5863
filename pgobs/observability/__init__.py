"""Seeing what pgobs does: Prometheus metrics and the audit trail."""
