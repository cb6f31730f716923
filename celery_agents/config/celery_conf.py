"""Celery's configuration, projected from ``Settings`` in one place."""

from __future__ import annotations

import ssl
from typing import Any

from .settings import Settings

# A run is never redelivered while its worker is alive (celery/celery#2599, #5935): the
# worker re-stamps its messages in kombu's unacked index every heartbeat (workers/leases.py),
# so the visibility timeout only measures how long a dead worker's runs wait. Every worker
# sweeps for such messages this often.
_RESTORE_SWEEPS_PER_TIMEOUT = 4
# And at least this often: a dead worker's messages, marked by the live worker that took it
# over (workers/recovery.py), go back on their queues within seconds.
RESTORE_EVERY = 2


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery ``conf`` for clients and workers alike (routing must match on both sides)."""
    visibility = settings.visibility_timeout
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
        "task_send_sent_event": settings.task_events,
        "worker_send_task_events": settings.task_events,
        "worker_prefetch_multiplier": 1,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        # A Redis restart or a network blip: reconnect for as long as it takes and resume
        # consuming (celery/celery#7185); results are stored once the backend answers again.
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        "redis_backend_health_check_interval": 10,
        # A run in progress when the broker connection drops keeps going: its lease stops a
        # redelivered copy from running it twice, and cancelling would waste the model call.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": min(
                RESTORE_EVERY, max(1, int(visibility / _RESTORE_SWEEPS_PER_TIMEOUT))
            ),
            "unacked_restore_throttle": 1,
            # Redis: one list per priority, served in priority order (RabbitMQ: x-max-priority).
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        "task_queue_max_priority": 9,
        "task_default_priority": 4,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "enable_utc": True,
        **redis_tls(settings),
    }


def redis_tls(settings: Settings) -> dict[str, Any]:
    """Celery's TLS settings for ``rediss://`` URLs: the server's certificate is verified.

    TLS options go in the URL's query, where redis-py, kombu and Celery all read them
    (``rediss://:pw@host:6380/0?ssl_ca_certs=/etc/ca.pem``; also ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs``). Without them kombu would fall back to
    ``CERT_NONE`` (encrypted, but open to a man in the middle) and Celery's result backend
    would refuse to start; here both default to ``CERT_REQUIRED``, as redis-py does, and
    whatever the URL says wins.
    """
    conf: dict[str, Any] = {}
    if settings.broker.startswith("rediss://"):
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.backend.startswith("rediss://"):
        conf["redis_backend_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf
