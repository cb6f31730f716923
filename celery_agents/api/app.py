"""The API's FastAPI app: the runs, schedules and usage routes behind API keys, and the web
console under ``/``.

    uvicorn "celery_agents.api.app:create_app" --factory   # or: celery-agents serve

The app is a client of the fleet like any other: it sends runs through the facade and reads
the run store, with the settings of the environment (``CELERY_AGENTS_*``) or ``configure()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..facade.bridge import on_io
from ..facade.client import get_client, shutdown
from . import errors, runs, schedules, usage
from .console import pages


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await on_io(get_client().run_store())  # keys live there: a store that is off fails now
    try:
        yield
    finally:
        shutdown()


def create_app() -> FastAPI:
    app = FastAPI(
        title="celery-agents",
        version=version("celery-agents"),
        summary="Run LLM agents, Teams and TeamRuns as queued jobs; follow them as SSE.",
        lifespan=_lifespan,
    )
    errors.install(app)
    for router in (runs.router, schedules.router, usage.router, pages.router):
        app.include_router(router)
    app.add_exception_handler(pages.LoginRequired, pages.to_login)
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
