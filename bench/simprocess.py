"""crmsim in a process of its own, for the scale benches.

A simulated CRM is a separate server in real life: run in its own process it neither shares the
GIL with the sync it serves nor counts towards leadscore's peak memory. The parent talks to it
over its HTTP APIs like any client, and over its admin endpoint for call counts.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import urllib.request
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from crmsim.app import CRMSim


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    started = time.perf_counter()
    sim = CRMSim(admin=True, **options).start()
    info = sim.info()
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    info["generation"] = dict(sim.last_generation)
    conn.send(info)
    try:
        conn.recv()  # anything (or the parent's end closing) stops the simulator
    except EOFError:
        pass
    finally:
        sim.stop()


class SimProcess:
    """``with SimProcess(leads=..., seed=...) as sim:`` a started crmsim in a child process."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.info: dict[str, Any] = {}
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, options), name="crmsim", daemon=True)

    def start(self) -> SimProcess:
        """Start the child and wait until the simulator serves (the world is built)."""
        if not self.info:
            self._process.start()
            self.info = self._parent.recv()
        return self

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._parent.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()

    def _admin(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.info['admin_url']}{path}", method=method)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            return json.loads(answer.read() or b"null")

    def call_counts(self) -> dict[str, Any]:
        """API calls served so far, per CRM (what the CRM charges: ``["total"][kind]``)."""
        counts: dict[str, Any] = self._admin("GET", "/counts")
        return counts

    def reset_counts(self) -> None:
        self._admin("POST", "/counts/reset")
