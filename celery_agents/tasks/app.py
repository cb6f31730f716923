"""``create_app``: a Celery app configured from ``Settings`` (the same routing on every side)."""

from __future__ import annotations

from celery import Celery

from ..config.celery_conf import celery_config
from ..config.settings import Settings


def create_app(settings: Settings, *, main: str = "celery_agents") -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def create_client_app(settings: Settings) -> Celery:
    """An app that only sends. It has no result backend: clients wait on events, and Celery's
    Redis backend would subscribe to every sent task's result channel (a cap near 430 sends/s).
    """
    app = create_app(settings, main="celery_agents.client")
    app.conf.result_backend = None
    return app
