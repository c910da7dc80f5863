"""Retention run by the leading listener, every ``maintenance_interval`` (pgobs.settings), when
pg_cron does not run it (``maintenance_runner`` is ``leader``; ``pgobs maintenance schedule``
sets it to ``pg_cron``). The first run comes one interval after leadership begins, so a fleet
that restarts often does not run it on every start."""

from __future__ import annotations

import logging
import time

import anyio

from pgobs.db.connect import connect
from pgobs.db.maintenance import maintenance_plan, run_maintenance

log = logging.getLogger("pgobs.listener")

CHECK_EVERY_S = 30.0  # a changed setting takes effect within this
BATCH_SIZE = 10_000


class LeaderMaintenance:
    def __init__(self, dsn: str, listener_id: str) -> None:
        self.dsn = dsn
        self.listener_id = listener_id
        self.runs = 0

    async def run(self) -> None:
        """Never raises: a failed run is logged and tried again one interval later."""
        last = time.monotonic()
        while True:
            wait = CHECK_EVERY_S
            try:
                conn = await connect(self.dsn, autocommit=True)
                try:
                    plan = await maintenance_plan(conn)
                    if plan.by_leader and plan.interval_s is not None:
                        due_in = last + plan.interval_s - time.monotonic()
                        if due_in <= 0:
                            last = time.monotonic()
                            report = await run_maintenance(
                                conn, dry_run=False, batch_size=BATCH_SIZE
                            )
                            self.runs += 1
                            log.info(
                                "listener %s ran maintenance: removed %s in %.2fs",
                                self.listener_id,
                                report.summary(),
                                report.took_s,
                            )
                            due_in = plan.interval_s
                        wait = min(wait, due_in)
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            except Exception as exc:
                log.warning("listener %s: maintenance failed (%s)", self.listener_id, exc)
            await anyio.sleep(max(wait, 0.05))
