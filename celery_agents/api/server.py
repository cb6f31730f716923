"""``celery-agents serve``: the API (and console) on uvicorn."""

from __future__ import annotations

import uvicorn

from .app import create_app


def serve(host: str, port: int, *, log_level: str = "info") -> None:
    """Serve until Ctrl+C (or SIGTERM); uvicorn shuts down gracefully, ending open streams."""
    uvicorn.run(
        create_app(),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
