"""From ``pgobs.events`` to ``pgobs.jobs``: leader election, commit-safe reading, fan-out."""
