"""The metrics port: ``/metrics`` (Prometheus), ``/healthz`` (liveness: the process answers)
and ``/readyz`` (readiness: see :mod:`pgobs.observability.health`), on a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from pgobs.observability.health import readiness


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/metrics", "/"):
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(REGISTRY), content_type)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            problems = readiness.problems()
            if problems:
                self._reply(503, ("not ready: " + "; ".join(problems) + "\n").encode())
            else:
                self._reply(200, b"ready\n")
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not worth a log line each."""


def start_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve the metrics port (0: any free port) in a daemon thread; returns the port bound.
    Raises OSError when the address cannot be bound."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pgobs-metrics", daemon=True).start()
    return int(server.server_address[1])
