"""The HTTP API (FastAPI): runs, their events as SSE, schedules and usage, per-tenant keys."""
