"""A listening port checked before a server starts: one line when it is taken, not the server's traceback."""

from __future__ import annotations

import socket

from config.errors import ConfigError


def check_port(host: str, port: int) -> None:
    """Fail at start (one line) when the address is taken, before saying the server is on it
    (uvicorn would log its own error lines after ours and exit 3; Flower prints a traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and tornado bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another process has it? "
                              "Choose another with --port") from exc
