"""``pgobs metrics``: the current values, read from a running worker's metrics port, or computed
from the database for the fleet-wide ones (queue depth, dead letters, heartbeats, lag)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Annotated, Any

from cyclopts import App, Parameter

from pgobs.cli.session import Dsn, with_connection
from pgobs.db.connect import Connection
from pgobs.errors import ConnectionFailed, NotFound, PgobsError

app = App(
    name="metrics",
    help="Current metric values: from a worker's --metrics-port (--url), else the fleet-wide "
    "ones computed from the database.",
)


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels, "value": _number(self.value)}

    def __str__(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{labels}}} {_number(self.value)}".replace("{}", "", 1)


@app.default
def show(
    *,
    metric: Annotated[
        str | None, Parameter(help="Only this metric (a family name, or one sample's name).")
    ] = None,
    url: Annotated[
        str | None,
        Parameter(help="A worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics."),
    ] = None,
    json: bool = False,
    dsn: Dsn = None,
) -> None:
    """Print metric values, one sample a line (or a JSON list with --json)."""
    if url is not None:
        endpoint = _endpoint(url)
        samples, families = scrape(endpoint)
        where = f"at {endpoint}"
    else:
        samples, families = with_connection(dsn, read_fleet_samples)
        where = "among the fleet-wide metrics (give --url to read a worker's own)"
    if metric is not None:
        known = sorted({*families, *families.values()})
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=3, cutoff=0.8)
            hint = f"did you mean {', '.join(close)}?" if close else "run without --metric to list"
            raise NotFound(f"no metric named {metric!r} {where}", hint)
        samples = [s for s in samples if metric in (s.name, families[s.name])]
    if json:
        from pgobs import jsoncodec

        print(jsoncodec.encode_indented([s.as_json() for s in samples]))
        return
    for sample in samples:
        print(sample)


def _endpoint(url: str) -> str:
    """``host:port`` and ``http://host:port`` mean that host's /metrics."""
    from urllib.parse import urlsplit

    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PgobsError(f"--url {url!r} is not an http(s) address", "e.g. http://127.0.0.1:9464")
    return url if parts.path not in ("", "/") else f"{url.rstrip('/')}/metrics"


def scrape(endpoint: str) -> tuple[list[Sample], dict[str, str]]:
    """The endpoint's samples (without the ``_created`` timestamps), and the family name of
    each sample name and of each family (so a family without samples is still known)."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    fix = "check that a pgobs worker runs there with --metrics-port"
    try:
        with urllib.request.urlopen(endpoint, timeout=10) as response:  # noqa: S310 - http(s) only
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise ConnectionFailed(f"{endpoint} answered HTTP {exc.code}", fix) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"cannot read {endpoint}: {reason}", fix) from exc
    samples, families = [], {}
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family.name
            for s in family.samples:
                if s.name.endswith("_created") and family.type in ("counter", "histogram"):
                    continue
                samples.append(Sample(s.name, dict(s.labels), float(s.value)))
                families[s.name] = family.name
    except ValueError as exc:
        raise PgobsError(
            f"{endpoint} does not serve Prometheus metrics ({exc})", "give a worker's /metrics"
        ) from exc
    return samples, families


async def read_fleet_samples(conn: Connection) -> tuple[list[Sample], dict[str, str]]:
    """The fleet-wide gauges, as the leading listener publishes them, plus each leader's lag."""
    from pgobs.listener.fleet import read_fleet

    reading = await read_fleet(conn)
    samples, families = [], {}
    for family in reading.metrics():
        families[family.name] = family.name
        for s in family.samples:
            samples.append(Sample(s.name, dict(s.labels), float(s.value)))
            families[s.name] = family.name
    for listener_id, lag in sorted(reading.lag_s.items()):
        samples.append(Sample("observer_listener_lag_seconds", {"listener_id": listener_id}, lag))
    families["observer_listener_lag_seconds"] = "observer_listener_lag_seconds"
    return samples, families


def _number(value: float) -> int | float | str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return int(value) if value.is_integer() else value
