"""The Celery application. Configured from ``celeryconfig``; tasks live in ``worker.tasks``."""

from __future__ import annotations

from celery import Celery


def create_app() -> Celery:
    app = Celery("leadscore", include=["worker.tasks"])
    app.config_from_object("celeryconfig")
    return app


app = create_app()
