"""The neighbour deployment the whole suite runs beside (conftest.py) notices being touched, so
a passing run means the tests left it alone."""

from __future__ import annotations

from pathlib import Path

from tests.support import Neighbour, execute, wait_until

KILL_LISTENER = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE 'pgobs listener %'"
)


def test_a_neighbour_notices_its_leader_session_being_killed(dsn: str, tmp_path: Path) -> None:
    neighbour = Neighbour(dsn, tmp_path)
    try:
        assert neighbour.disturbances() == []
        execute(dsn, KILL_LISTENER)
        wait_until(lambda: "lost its session" in neighbour.worker.output())
        found = neighbour.disturbances()
    finally:
        neighbour.worker.stop()
    assert any("listener sessions changed" in f for f in found), found
    assert any("of its sessions were terminated" in f for f in found), found
