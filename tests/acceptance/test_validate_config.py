"""``pgobs validate-config`` never runs user code unless told to with ``--import-handlers``."""

from __future__ import annotations

from pathlib import Path

from tests.support import run_pgobs

HOOKS = """
from pathlib import Path

Path(__file__).with_name("imported.txt").write_text("the module ran")


async def on_order(event):
    return None


def on_refund(event):
    return None
"""

CONFIG = """observers:
  - name: obs
    entity: Order
    actions:
      - type: python
        handler: cfg_hooks:on_order
      - type: python
        handler: cfg_hooks:{second}
"""


def setup(tmp_path: Path, second: str) -> tuple[Path, Path]:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "cfg_hooks.py").write_text(HOOKS)
    file = folder / "observers.yaml"
    file.write_text(CONFIG.format(second=second))
    return file, folder / "imported.txt"


def test_validation_reads_handlers_without_importing_them(tmp_path: Path) -> None:
    file, marker = setup(tmp_path, "on_refund")
    result = run_pgobs(None, "validate-config", str(file), "--detailed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert f"{file}: ok — 1 observer(s), 2 action(s)" in result.stdout
    assert "handler cfg_hooks:on_order: async def at" in result.stdout
    assert "handler cfg_hooks:on_refund: def at" in result.stdout


def test_a_missing_handler_is_one_line_with_its_place_and_a_hint(tmp_path: Path) -> None:
    file, marker = setup(tmp_path, "on_cancel")
    result = run_pgobs(None, "validate-config", str(file), cwd=tmp_path)
    assert result.returncode == 4
    assert not marker.exists()
    first, summary = result.stderr.strip().splitlines()
    assert first.startswith(f"{file}:8: error: ")
    assert "cfg_hooks.py has no function 'on_cancel'" in first
    assert "define def on_cancel(event) or async def on_cancel(event)" in first
    assert summary == f"{file}: 1 error(s)"


def test_import_handlers_imports_them(tmp_path: Path) -> None:
    file, marker = setup(tmp_path, "on_refund")
    result = run_pgobs(
        None, "validate-config", str(file), "--import-handlers", "--detailed", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "the module ran"
    assert "handler cfg_hooks:on_order: async, imported" in result.stdout


PROTECTION = """observers:
  - name: obs
    entity: Order
    dedup: {window: 5 minutes, key: "{{ 1 / 0 }}", scope: all}
    enrich:
      - name: customer
        http: {url: "ftp://crm.internal/customers/{{ data.customer_id }}"}
        cache: {key: "customer:{{ data.customer_id }}", ttl: 5m}
    actions: [{type: log}]
"""


def test_dedup_and_enrich_mistakes_are_each_one_line_with_place_and_hint(tmp_path: Path) -> None:
    file = tmp_path / "observers.yaml"
    file.write_text(PROTECTION)
    result = run_pgobs(None, "validate-config", str(file), cwd=tmp_path)
    assert result.returncode == 4  # validation failed (pgobs.errors)
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"{file}: 4 error(s)"
    expected = [
        ("4", "'window' must be a duration", "5m"),
        ("4", "dedup key does not render", 'key: "order:{{ data.id }}"'),
        ("4", "unknown key 'scope' in dedup", "known keys"),
        ("7", "is not an http(s) URL", "https://"),
    ]
    for line_no, words, hint in expected:
        assert any(
            line.startswith(f"{file}:{line_no}: error: ") and words in line and hint in line
            for line in lines
        ), (words, lines)
    assert "Traceback" not in result.stderr
