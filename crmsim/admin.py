"""crmsim's admin HTTP endpoint: JSON on loopback, for tests, the demo and operators.

It is not part of either CRM's API. Routes::

    GET  /health            {"status": "ok", "now": ISO}
    GET  /info              CRMSim.info()
    GET  /truth             {"now": ISO, "people": [...]}: hidden ground truth (World.truth())
    GET  /counts            {"salesforce": {...}, "hubspot": {...}}: API calls served
    POST /counts/reset      zero the call counters
    POST /advance           {"days": n} -> summary of what changed
    POST /faults            {"spec": "rate_429=0.1", "seed": 0} -> the plans now in force

Bad input answers 400 with ``{"error": "..."}``; unknown routes 404; never a traceback.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from crmsim.faults import FaultSpecError

if TYPE_CHECKING:
    from crmsim.app import CRMSim

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_ADVANCE_DAYS = 3650.0


class AdminInputError(ValueError):
    """A request the admin endpoint refuses (answered 400 with the message)."""


class AdminServer:
    """Serves the admin routes for one :class:`~crmsim.app.CRMSim` on ``host:port`` (0 = any free)."""

    def __init__(self, sim: CRMSim, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._httpd is None:
            raise RuntimeError("admin server not started")
        port = self._httpd.server_address[1]
        return f"http://{self.host}:{port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        sim = self.sim

        class Handler(_AdminHandler):
            pass

        Handler.sim = sim
        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="crmsim-admin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _days(body: dict[str, Any]) -> float:
    days = body.get("days")
    if isinstance(days, bool) or not isinstance(days, int | float):
        raise AdminInputError("'days' must be a number")
    if not 0 < days <= MAX_ADVANCE_DAYS:
        raise AdminInputError(f"'days' must be in (0, {MAX_ADVANCE_DAYS:g}]")
    return float(days)


class _AdminHandler(BaseHTTPRequestHandler):
    sim: CRMSim
    server_version = "crmsim-admin/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("admin %s", format % args)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            raise AdminInputError("bad Content-Length") from exc
        if length > MAX_BODY:
            raise AdminInputError("body too large")
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdminInputError(f"body is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise AdminInputError("body must be a JSON object")
        return parsed

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        sim = self.sim
        routes = {
            ("GET", "/health"): lambda: {"status": "ok", "now": sim.world.now.isoformat()},
            ("GET", "/info"): sim.info,
            ("GET", "/truth"): lambda: {"now": sim.world.now.isoformat(), "people": sim.truth()},
            ("GET", "/counts"): sim.call_counts,
            ("POST", "/counts/reset"): self._reset_counts,
            ("POST", "/advance"): lambda: sim.advance(_days(self._body())),
            ("POST", "/faults"): lambda: self._faults(),
        }
        handler = routes.get((method, path))
        if handler is None:
            if any(route_path == path for _m, route_path in routes):
                self._send(405, {"error": f"{method} not allowed on {path}"})
            else:
                self._send(404, {"error": f"no route {path}"})
            return
        try:
            self._send(200, handler())
        except (AdminInputError, FaultSpecError, ValueError) as exc:
            self._send(400, {"error": str(exc)})
        except Exception:
            # A bug, not bad input: record it with its trace in the log, answer without one.
            log.exception("admin %s %s failed", method, path)
            self._send(500, {"error": "internal error (see crmsim log)"})

    def _reset_counts(self) -> dict[str, Any]:
        self.sim.reset_counts()
        return {"status": "ok"}

    def _faults(self) -> dict[str, Any]:
        body = self._body()
        spec = body.get("spec")
        seed = body.get("seed", 0)
        if spec is not None and not isinstance(spec, str):
            raise AdminInputError("'spec' must be a string or null")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise AdminInputError("'seed' must be an integer")
        self.sim.set_faults(spec, seed=seed)
        return {"status": "ok", "faults": self.sim.fault_plans()}

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._route("POST")
