"""The ``leadscore`` command line: ``main`` (the console script) and ``app`` (the Typer app).

One module per command group; ``main.py`` assembles them and turns every failure into one line.
"""

from __future__ import annotations

from worker.cli.main import app, main

__all__ = ["app", "main"]
