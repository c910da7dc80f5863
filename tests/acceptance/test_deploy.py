"""What deploy/ and compose.yaml ship: alert rules that promtool checks and unit-tests, a
dashboard and rules that use the metrics pgobs serves, and a compose file whose structure holds
(no Docker engine here: it parses, every file it names exists, every pgobs command line in it is
one the CLI accepts, and the sdist carries it all)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from pgobs.cli.app import app
from pgobs.config.loader import parse_config_file
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"

# Metrics the other phase-8 parts serve (the names agreed between them); everything else the
# rules and the dashboard use must be served by this tree's pgobs.
AGREED_ELSEWHERE = {
    "observer_circuit_state",
    "observer_dedup_store_up",
    "observer_dedup_fallback_total",
    "observer_dedup_skipped_total",
    "observer_cache_hits_total",
    "observer_cache_misses_total",
    "observer_search_sink_backlog",
    "observer_search_sink_backlog_age_seconds",
}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> None:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: apt-get install --no-install-recommends prometheus "
            "(.ci/run does)"
        )
    result = subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool("check", "rules", "alerts.yml")
    promtool("test", "rules", "alerts_test.yml")
    promtool("check", "config", "prometheus.yml")


def test_alert_rules_are_the_seeds_four_plus_lag_and_heartbeat() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == {
        "PgobsDLQBacklog",
        "PgobsActionFailureRate",
        "PgobsListenerDown",
        "PgobsDedupStoreDown",
        "PgobsListenerLag",
        "PgobsListenerHeartbeatStale",
    }
    tested = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == names  # every rule has a unit test in which it fires


def served_sample_names() -> set[str]:
    from pgobs.observability import metrics

    names = {family.name for family in metrics.fleet.describe()}  # gauges, served by the leader
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


@pytest.mark.parametrize(
    "path", [PROMETHEUS / "alerts.yml", DEPLOY / "grafana" / "pgobs.json"], ids=lambda p: p.name
)
def test_rules_and_dashboard_use_only_metrics_that_exist(path: Path) -> None:
    used = set(re.findall(r"\bobserver_[a-z_]+", path.read_text()))
    assert used, path
    unknown = used - served_sample_names() - AGREED_ELSEWHERE
    assert not unknown, f"{path.name} uses metrics nobody serves: {sorted(unknown)}"


def test_grafana_provisioning_finds_the_dashboard_and_its_datasource() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "pgobs.json").read_text())
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["expr"] for t in panel["targets"]), panel["title"]
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/pgobs.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/pgobs.json:{folder}/pgobs.json:ro" in mounts


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_services_are_all_there_pinned_checked_and_stored_in_named_volumes() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "elasticsearch",
        "migrate",
        "worker-1",
        "worker-2",
        "prometheus",
        "grafana",
    }
    declared = set(spec["volumes"])
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned to a version"
        if "build" in service:
            dockerfile = (ROOT / service["build"] / "Dockerfile").read_text()
            for base in re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE):
                assert re.search(r":\S*\d", base), f"{name}: base image {base} is not pinned"
        if name != "migrate":
            assert service["healthcheck"]["test"], f"{name} has no health check"
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown service {needed}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for worker in ("worker-1", "worker-2"):
        needs = services[worker]["depends_on"]["migrate"]["condition"]
        assert needs == "service_completed_successfully"
    # pg_cron is preloaded and created in the pgobs database.
    postgres = services["postgres"]
    assert "shared_preload_libraries=pg_cron" in postgres["command"]
    assert "cron.database_name=pgobs" in postgres["command"]
    assert "postgresql-16-cron" in (ROOT / postgres["build"] / "Dockerfile").read_text()
    initdb = ROOT / "deploy/postgres/initdb/10-pg_cron.sql"
    assert "CREATE EXTENSION IF NOT EXISTS pg_cron" in initdb.read_text()


def pgobs_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s.get("build") == "."}


def test_every_pgobs_command_line_in_compose_is_one_the_cli_accepts() -> None:
    assert 'ENTRYPOINT ["pgobs"]' in (ROOT / "Dockerfile").read_text()
    services = pgobs_services()
    assert set(services) == {"migrate", "worker-1", "worker-2"}
    for name, service in services.items():
        command, bound, _ = app.parse_args(
            service["command"], exit_on_error=False, print_error=False
        )
        assert command.__name__ in ("migrate", "worker"), name
        if command.__name__ == "worker":
            # Prometheus scrapes each worker on its metrics port, reachable from other containers.
            assert bound.arguments["metrics_host"] == "0.0.0.0"
            port = bound.arguments["metrics_port"]
            scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
            targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
            assert f"{name}:{port}" in targets
            assert str(port) in " ".join(service["healthcheck"]["test"])
            # The observers file it is given parses and validates.
            (mount,) = [m for m in service["volumes"] if ":" + str(bound.arguments["config"]) in m]
            config, issues = parse_config_file(ROOT / mount.split(":", 1)[0], strict_env=False)
            assert config is not None, issues
    # The README's one-off commands run through the migrate service's image, too.
    app.parse_args(
        ["track", "public.orders", "--entity", "Order"], exit_on_error=False, print_error=False
    )


def test_the_sdist_carries_compose_and_every_file_it_names(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (sdist,) = tmp_path.glob("pgobs-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    referenced = {"compose.yaml", "Dockerfile", "deploy/postgres/Dockerfile"}
    for service in compose()["services"].values():
        for mount in service.get("volumes", []):
            if mount.startswith("./"):
                source = ROOT / mount.split(":", 1)[0]
                files = source.rglob("*") if source.is_dir() else [source]
                referenced |= {str(f.relative_to(ROOT)) for f in files if f.is_file()}
    referenced |= {"deploy/prometheus/alerts.yml", "deploy/prometheus/alerts_test.yml"}
    assert referenced <= names, sorted(referenced - names)
