"""From ``pgobs.jobs`` to side effects: claiming with leases, running, retrying, the DLQ."""
