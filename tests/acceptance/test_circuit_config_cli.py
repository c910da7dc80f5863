"""``pgobs validate-config`` on circuit settings: every mistake on a line of its own, with the
file, the line and a hint, and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from tests.support import run_pgobs

CONFIG = """defaults:
  circuit: {open_for: 30 seconds, window: 1m}
observers:
  - name: obs
    entity: Order
    actions:
      - type: webhook
        url: https://partner.example/hook
        circuit:
          failure_threshold: 1.5
          min_requets: 5
          max_open_for: 10s
      - type: log
        circuit: {enabled: false}
"""


def test_bad_circuit_settings_are_reported_with_file_line_and_hint(tmp_path: Path) -> None:
    file = tmp_path / "observers.yaml"
    file.write_text(CONFIG)
    result = run_pgobs(None, "validate-config", str(file), cwd=tmp_path)
    assert result.returncode == 4  # validation failed
    lines = result.stderr.strip().splitlines()
    expected = [
        (2, "'open_for' must be a duration, got '30 seconds'", "500ms, 30s, 5m, 1h, 2d"),
        (
            10,
            "circuit 'failure_threshold' must be a failure rate above 0 and at most 1, got 1.5",
            "e.g. failure_threshold: 0.5",
        ),
        (11, "unknown key 'min_requets' in circuit", "did you mean 'min_requests'?"),
        (12, "circuit max_open_for (10s) is shorter than open_for (30s)", "raise max_open_for"),
        (14, "a log action calls nothing outside: it has no circuit", "remove circuit:"),
    ]
    for line, message, hint in expected:
        found = [x for x in lines if x.startswith(f"{file}:{line}: error: {message}")]
        assert len(found) == 1, (line, message, lines)
        assert hint in found[0].split(" — ", 1)[1]
    assert "Traceback" not in result.stderr
