"""The optional Redis: where it is, how long pgobs waits for it, and the names pgobs keys by.

Redis is an accelerator, never the truth: every user of it falls back to Postgres when a call
fails or takes longer than ``timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from pgobs.errors import BadOption

DEFAULT_TIMEOUT_S = 0.25


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    # Every key starts with this, so deployments (databases) sharing one Redis never meet.
    prefix: str
    timeout_s: float = DEFAULT_TIMEOUT_S


def redis_settings(url: str | None, dsn: str) -> RedisSettings | None:
    """Settings for ``url`` (None: no Redis), keyed by the database ``dsn`` names."""
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        scheme = url.split("://")[0] + "://" if "://" in url else "no scheme"
        raise BadOption(  # the rest of the URL is not shown: it may hold a password
            f"--redis-url is not a Redis URL (it starts with {scheme})",
            "write redis://host:6379/0, rediss:// for TLS, or unix:///path/redis.sock",
        )
    info = conninfo_to_dict(dsn)
    where = f"{info.get('host') or 'local'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
    return RedisSettings(url=url, prefix=f"pgobs:{where}:")


def redis_client(settings: RedisSettings) -> Any:
    """An asyncio client bound to the running event loop's first use. Typed Any: redis' own
    stubs make every command ``Awaitable | value``."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No retries inside the client: a failed call falls back to Postgres at once.
    return redis.asyncio.Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
