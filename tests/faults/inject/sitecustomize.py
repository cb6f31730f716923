"""Loaded by a worker started with this folder on PYTHONPATH (fault tests only): with
CELERY_AGENTS_TEST_DIE_AT_CHORD_PART set, the worker dies (as under kill -9) as soon as Celery
is about to count a finished Team member in its chord: after the member's end is recorded
and published, before the count and the ack."""

import os

if os.environ.get("CELERY_AGENTS_TEST_DIE_AT_CHORD_PART"):
    from celery.backends import redis as _backend

    def _die(*args: object, **kwargs: object) -> None:
        os._exit(9)

    _backend.RedisBackend.on_chord_part_return = _die  # type: ignore[method-assign]
