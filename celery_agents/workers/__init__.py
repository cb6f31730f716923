"""The worker side: Celery app, one event loop per process, tools, model clients, publisher."""
