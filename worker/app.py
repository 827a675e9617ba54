"""The Celery application. Configured from ``celeryconfig``; tasks live in ``worker.tasks``."""

from __future__ import annotations

from celery import Celery, Task

from config.errors import LeadscoreError


class LeadscoreTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """leadscore's tasks. A :class:`LeadscoreError` (an unset secret, a refused login, a CA bundle
    gone: something an admin fixes, whose message is one line saying what) ends the task FAILURE
    with that line, as Flower and the result backend show it, and the worker logs the line
    without a traceback (Celery's ``throws``: "raised expected", where beat would otherwise print
    the same traceback every minute)."""

    throws = (LeadscoreError,)


def create_app() -> Celery:
    app = Celery("leadscore", include=["worker.tasks"], task_cls=LeadscoreTask)
    app.config_from_object("celeryconfig")
    return app


app = create_app()
