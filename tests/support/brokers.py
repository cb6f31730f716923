"""The RabbitMQ of the tests that also cover an amqp:// broker: only one named to them in
``CELERY_AGENTS_TEST_AMQP_URL`` (``.ci/run`` names the machine's), never whatever answers on
5672. Not named: those tests skip, saying so. Named but not answering: they skip, or fail when
``CI=true``."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

AMQP_ENV = "CELERY_AGENTS_TEST_AMQP_URL"
AMQP_URL = os.environ.get(AMQP_ENV, "")


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 1):
            return True
    except OSError:
        return False


def need_rabbitmq() -> str:
    """The named broker's URL; skips (or fails, with CI=true) the test without one."""
    if not AMQP_URL:
        pytest.skip(f"no RabbitMQ named in {AMQP_ENV}")
    if not _answers(AMQP_URL):
        reason = f"{AMQP_ENV}={AMQP_URL} does not answer"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI=true needs it")
        pytest.skip(reason)
    return AMQP_URL
