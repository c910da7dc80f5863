"""Dedup windows: an observer fires once per fingerprint per window.

The fingerprint is the event's idempotency key (``pgobs.emit(..., idempotency_key)``) when it has
one, else the observer's ``dedup.key`` template rendered with the event, else a hash of
entity_type, entity_id, event_type and the row data. Each is scoped to its observer.

Postgres is the store of record and is exact: the fan-out statement claims fingerprints in
``pgobs.dedup`` in the transaction that writes the jobs and the checkpoint (``fan_out`` in
queries.sql), so a crash keeps both or neither.

Redis, when configured, is the fast path: ``SET fp batch NX PX window GET`` for every
fingerprint of a batch in one script call, and no ``pgobs.dedup`` row per event. A Redis key
names the batch that claimed it, and is trusted only once that batch has committed, which is
known either here (this process committed it) or from the ``batch:<id>`` row the fan-out
statement writes with its jobs.
So a listener that dies after ``SET`` and before its commit leaves keys naming a batch that never
committed; the next leader re-reads those events, finds the keys' batch unknown, and lets
Postgres decide exactly (and keeps a ``pgobs.dedup`` row for them). Redis down or slow: every
fingerprint goes to Postgres for the outage, and for one dedup window after it (Postgres holds
what was claimed meanwhile, Redis does not).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pgobs import jsoncodec
from pgobs.events import Event
from pgobs.observability import metrics
from pgobs.reliability.redisconn import RedisSettings, redis_client
from pgobs.reliability.specs import DedupPolicy

log = logging.getLogger("pgobs.dedup")

GateMode = Literal["check", "free", "skip"]
COMMITTED_MEMORY = 4096  # batches this process committed whose Redis claims it trusts
RETRY_AFTER_S = 1.0  # while Redis is down, try it again at most this often
# SET key batch NX PX window GET for every key; the previous claimer of each, or nil (false).
CLAIM_SCRIPT = """
local previous = {}
for i, key in ipairs(KEYS) do
    previous[i] = redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[i + 1], 'GET')
end
return previous
"""


def fingerprint(observer: str, policy: DedupPolicy, event: Event) -> str:
    """The event's identity for ``observer``; raises TemplateFailed when the key does not
    render."""
    if event.idempotency_key is not None:
        basis = b"key\0" + event.idempotency_key.encode()
    elif policy.key is not None:
        envelope = event.envelope()
        envelope["observer"] = observer
        basis = b"tpl\0" + policy.key.render({**envelope, "event": envelope}).encode()
    else:
        # jsonb writes an object's keys in one order, so equal rows encode alike.
        basis = b"row\0" + jsoncodec.encode(
            [event.entity_type, event.entity_id, event.event_type, event.data]
        )
    return f"{observer}:{hashlib.blake2b(basis, digest_size=16).hexdigest()}"


@dataclass(slots=True)
class Gate:
    """One (event, observer) whose jobs are written only if its fingerprint is new."""

    fingerprint: str
    window_s: float
    event_id: int
    observer: str
    mode: GateMode = "check"
    claimed_by: str | None = None  # a batch Redis names as the fingerprint's claimer


@dataclass(slots=True)
class Gates:
    items: list[Gate] = field(default_factory=list)
    batch_id: str | None = None  # set when Redis claimed fingerprints for this batch
    batch_ttl_s: float = 0.0

    def params(self) -> dict[str, Any]:
        return {
            "gate_fingerprints": [g.fingerprint for g in self.items],
            "gate_windows": [g.window_s for g in self.items],
            "gate_modes": [g.mode for g in self.items],
            "gate_claimed_by": [g.claimed_by for g in self.items],
            "gate_event_ids": [g.event_id for g in self.items],
            "gate_observers": [g.observer for g in self.items],
            "batch_id": self.batch_id,
            "batch_ttl_s": self.batch_ttl_s,
        }


class RedisDedup:
    """The Redis fast path of one listener (see the module's docstring)."""

    def __init__(self, settings: RedisSettings, longest_window_s: float) -> None:
        self.settings = settings
        self.longest_window_s = longest_window_s
        self._client: Any = None
        self._script: Any = None
        self._committed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._exact_until = 0.0  # after an outage: Postgres decides until then
        self._up = metrics.dedup_store_up.labels("redis")
        self._up.set(1)

    async def screen(self, gates: Gates) -> None:
        """Claim the batch's fingerprints in Redis: set each gate's mode, and the batch id when
        any claim needs the batch to commit. On any Redis failure every gate stays 'check'."""
        todo = [g for g in gates.items if g.mode == "check"]
        now = time.monotonic()
        if not todo or now < self._retry_at:
            if todo:
                metrics.dedup_fallback.labels("down").inc()
            return
        batch_id = uuid.uuid4().hex
        try:
            answers = await self._claim(todo, batch_id)
        except Exception as exc:
            self._failed(exc, now)
            return
        self._recovered(now)
        exact = now < self._exact_until
        for gate, previous in zip(todo, answers, strict=True):
            if previous is None:  # claimed now, by this batch
                gate.mode = "check" if exact else "free"
            else:
                claimer = previous.decode() if isinstance(previous, bytes) else str(previous)
                if claimer in self._committed:
                    gate.mode = "skip"
                else:  # a batch of another process, or one that never committed
                    gate.claimed_by = claimer
        gates.batch_id = batch_id
        gates.batch_ttl_s = max(g.window_s for g in todo)

    async def _claim(self, gates: list[Gate], batch_id: str) -> list[Any]:
        """One command for the whole batch: a pipeline of thousands of SETs cost the listener
        more CPU in redis-py than the fan-out statement itself."""
        if self._client is None:
            self._client = redis_client(self.settings)
            self._script = self._client.register_script(CLAIM_SCRIPT)
        prefix = self.settings.prefix + "dedup:"
        keys = [prefix + gate.fingerprint for gate in gates]
        windows = [max(1, int(gate.window_s * 1000)) for gate in gates]
        return list(await self._script(keys=keys, args=[batch_id, *windows]))

    async def committed(self, gates: Gates) -> None:
        """The batch committed: trust its claims; point contested keys at it (best effort; a
        key left naming the never-committed batch sends its fingerprint to Postgres, which now
        has a row for it)."""
        if gates.batch_id is None:
            return
        self._committed[gates.batch_id] = None
        while len(self._committed) > COMMITTED_MEMORY:
            self._committed.popitem(last=False)
        contested = [g for g in gates.items if g.claimed_by is not None and g.mode == "check"]
        if not contested or self._client is None:
            return
        prefix = self.settings.prefix + "dedup:"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for gate in contested:
                    pipe.set(
                        prefix + gate.fingerprint,
                        gates.batch_id,
                        xx=True,
                        keepttl=True,
                    )
                await pipe.execute()
        except Exception as exc:
            self._failed(exc, time.monotonic())

    def _failed(self, exc: Exception, now: float) -> None:
        reason = "timeout" if "timeout" in type(exc).__name__.lower() else "error"
        metrics.dedup_fallback.labels(reason).inc()
        self._retry_at = now + RETRY_AFTER_S
        if self._down_since is None:
            self._down_since = now
            self._up.set(0)
            log.warning(
                "dedup: Redis failed (%s: %s); fingerprints are checked in Postgres until it "
                "answers again",
                type(exc).__name__,
                exc,
            )

    def _recovered(self, now: float) -> None:
        if self._down_since is None:
            return
        self._exact_until = now + self.longest_window_s
        log.warning(
            "dedup: Redis answers again after %.1fs; Postgres keeps deciding for %.0fs (what it "
            "claimed during the outage)",
            now - self._down_since,
            self.longest_window_s,
        )
        self._down_since = None
        self._up.set(1)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = self._script = None
