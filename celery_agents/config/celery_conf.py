"""Celery's configuration, projected from ``Settings`` in one place."""

from __future__ import annotations

from typing import Any

from .settings import Settings

# A run is never redelivered while its worker is alive: the broker's visibility timeout is
# comfortably longer than any run may take (celery/celery#2599, #5935).
_VISIBILITY_MARGIN = 2.0


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery ``conf`` for clients and workers alike (routing must match on both sides)."""
    visibility = max(3600.0, settings.run_timeout * _VISIBILITY_MARGIN)
    return {
        "broker_url": settings.broker,
        "result_backend": settings.backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "result_expires": settings.result_ttl,
        "result_extended": False,
        "task_default_queue": settings.queue,
        # No STARTED state write per task: the run.started event already says so.
        "task_track_started": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # Redis: one list per priority, served in priority order (RabbitMQ: x-max-priority).
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        "task_queue_max_priority": 9,
        "task_default_priority": 4,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "enable_utc": True,
    }
