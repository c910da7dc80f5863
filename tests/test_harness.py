"""The test harness itself: Redis from PGOBS_TEST_REDIS_URL must answer, or the test fails."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from tests.support import ROOT


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"pgobs-harness-{os.getpid()}"
        client.set(key, "ok", ex=10)
        assert client.get(key) == b"ok"
        client.delete(key)
    finally:
        client.close()


def test_unreachable_redis_fails_instead_of_skipping() -> None:
    env = {**os.environ, "PGOBS_TEST_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_harness.py::test_redis_answers",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "does not answer" in result.stdout
    assert "1 error" in result.stdout
