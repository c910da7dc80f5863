"""``pgobs worker``: a listener candidate and/or the action workers, until SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import anyio
from cyclopts import Parameter

from pgobs.cli.session import Dsn
from pgobs.config.loader import load_config
from pgobs.db.connect import resolve_dsn
from pgobs.errors import BadOption
from pgobs.listener.listener import ListenerSettings
from pgobs.observability.metrics import serve_metrics
from pgobs.queue.worker import WorkerSettings
from pgobs.reliability.redisconn import redis_settings
from pgobs.supervisor import ProcessSettings, run_process


def worker(
    *,
    config: Annotated[Path, Parameter(help="The observers file.")] = Path("observers.yaml"),
    concurrency: int = 32,
    role: Literal["listener", "worker", "all"] = "all",
    listener_id: str = "default",
    batch_size: int = 500,
    leader_stale_seconds: float = 3.0,
    metrics_port: Annotated[
        int, Parameter(help="Serve Prometheus /metrics on this port (e.g. 9464); 0: off.")
    ] = 0,
    metrics_host: str = "127.0.0.1",
    lease_seconds: float = 30.0,
    grace_seconds: float = 10.0,
    redis_url: Annotated[
        str | None,
        Parameter(
            env_var="PGOBS_REDIS_URL",
            help="Redis for dedup and the enrichment cache (redis://host:6379/0); Postgres "
            "stays the truth and takes over while Redis is down.",
        ),
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Run a worker process: a listener candidate and/or the action workers.

    Parameters
    ----------
    concurrency
        Most actions this process runs at once.
    role
        listener: fan events out only; worker: run jobs only; all: both.
    listener_id
        Listeners with the same id elect one leader; different ids shard the fan-out.
    batch_size
        Events the listener reads per transaction.
    leader_stale_seconds
        A standby ends the leader's session and takes over when the leader's fan-out loop has
        been silent this long (a frozen process keeps its session, and with it the lock).
    lease_seconds
        How long a claimed job stays reserved without a heartbeat; a dead worker's jobs come back
        after this.
    grace_seconds
        On SIGTERM, how long running actions may take to finish before they are handed back.
    """
    if lease_seconds < 1:
        raise BadOption(f"--lease-seconds must be at least 1, got {lease_seconds:g}")
    if grace_seconds < 0:
        raise BadOption(f"--grace-seconds must not be negative, got {grace_seconds:g}")
    if not 0 <= metrics_port <= 65535:
        raise BadOption(f"--metrics-port must be between 0 and 65535, got {metrics_port}")
    if concurrency < 1:
        raise BadOption(f"--concurrency must be at least 1, got {concurrency}")
    if not 1 <= batch_size <= 100_000:
        raise BadOption(f"--batch-size must be between 1 and 100000, got {batch_size}")
    if not 2 <= leader_stale_seconds <= 3600:
        raise BadOption(
            f"--leader-stale-seconds must be between 2 and 3600, got {leader_stale_seconds:g}"
        )
    loaded = load_config(config, strict_env=True)
    resolved = resolve_dsn(dsn)
    if metrics_port:
        serve_metrics(metrics_port, metrics_host)
    redis = redis_settings(redis_url, resolved)
    settings = ProcessSettings(
        role=role,
        listener=ListenerSettings(
            listener_id=listener_id,
            batch_size=batch_size,
            leader_stale_s=leader_stale_seconds,
            redis=redis,
        ),
        worker=WorkerSettings(
            concurrency=concurrency, lease_s=lease_seconds, grace_s=grace_seconds, redis=redis
        ),
    )
    anyio.run(lambda: run_process(resolved, loaded, settings))
