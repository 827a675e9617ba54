"""Celery tasks: thin wrappers that take ids/names, open one unit of work, call one function.

Every task has a stable explicit name. Retries: only ``RetriableCRMError`` (the CRM may answer
next time); never ``Exception`` (that would retry bugs).
"""

from __future__ import annotations

import logging
from typing import Any

from worker.app import app

logger = logging.getLogger(__name__)


@app.task(name="leadscore.ping")
def ping(value: str = "pong") -> dict[str, Any]:
    """Round-trip check used by ``leadscore status`` and the tests: echoes and names the worker."""
    import os
    import socket

    return {"value": value, "host": socket.gethostname(), "pid": os.getpid()}
