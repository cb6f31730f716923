"""The RabbitMQ this machine may run, for the tests that also cover an amqp:// broker."""

from __future__ import annotations

import socket

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False
