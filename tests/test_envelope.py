"""A direct send writes what Celery's producer writes: the same list, message and event."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import redis

from celery_agents import Settings
from celery_agents.tasks.app import create_client_app
from celery_agents.tasks.envelope import DirectSend
from celery_agents.tasks.names import RUN_AGENT

KWARGS = {"payload": {"run_id": "r", "prompt": "héllo", "nested": [1, 2.5, None, True]}}


def _only_list(client: redis.Redis, queue: str) -> tuple[str, dict[str, Any]]:
    keys = [k.decode() for k in client.keys(f"{queue}*")]
    assert len(keys) == 1, keys
    raw = client.lpop(keys[0])
    assert raw is not None
    return keys[0], json.loads(raw)


def _event(subscriber: redis.client.PubSub) -> tuple[str, dict[str, Any]]:
    message = subscriber.get_message(timeout=5)
    assert message is not None, "no task-sent event"
    envelope = json.loads(message["data"])
    return message["channel"].decode(), envelope


def _body(envelope: dict[str, Any]) -> Any:
    assert envelope["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(envelope["body"]))


def _comparable(envelope: dict[str, Any], task_id: str, queue: str) -> dict[str, Any]:
    """The envelope with its per-send values (ids, tags, queue names, clocks) blanked."""
    text = json.dumps({**envelope, "body": _body(envelope)})
    text = text.replace(task_id, "<id>").replace(queue, "<queue>")
    out: dict[str, Any] = json.loads(text)
    out["properties"].pop("delivery_tag")
    for key in ("clock", "timestamp", "utcoffset"):
        if isinstance(out["body"], dict):
            out["body"].pop(key, None)
    return out


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_a_direct_send_writes_what_celery_writes(agents_redis_url: str, priority: int) -> None:
    settings = Settings(redis_url=agents_redis_url, task_events=True)
    app = create_client_app(settings)
    direct = DirectSend.for_settings(app, settings)
    assert direct is not None
    client = redis.Redis.from_url(agents_redis_url)
    subscriber = client.pubsub()
    subscriber.psubscribe("*celeryev/task.sent")
    confirmed = subscriber.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "psubscribe"
    tag = uuid.uuid4().hex[:8]
    theirs_queue, ours_queue = f"theirs-{tag}", f"ours-{tag}"
    theirs_id, ours_id = f"celery-{tag}", f"direct-{tag}"
    repr_ = json.dumps({"run_id": "r"})

    app.send_task(
        RUN_AGENT,
        kwargs=KWARGS,
        task_id=theirs_id,
        kwargsrepr=repr_,
        argsrepr="()",
        queue=theirs_queue,
        priority=priority,
    )
    theirs_key, theirs = _only_list(client, theirs_queue)
    theirs_channel, theirs_event = _event(subscriber)

    push = direct.push(
        RUN_AGENT, ours_id, KWARGS, kwargsrepr=repr_, queue=ours_queue, priority=priority
    )
    client.lpush(push.key, push.message)
    assert push.event is not None
    client.publish(*push.event)
    ours_key, ours = _only_list(client, ours_queue)
    ours_channel, ours_event = _event(subscriber)

    assert ours_key.replace(ours_queue, "<queue>") == theirs_key.replace(theirs_queue, "<queue>")
    assert _body(ours) == _body(theirs)
    theirs_view = _comparable(theirs, theirs_id, theirs_queue)
    # Celery also copies argsrepr/kwargsrepr into the properties, where nothing reads them.
    for extra in ("argsrepr", "kwargsrepr"):
        theirs_view["properties"].pop(extra, None)
    assert _comparable(ours, ours_id, ours_queue) == theirs_view
    assert ours_channel == theirs_channel
    assert _comparable(ours_event, ours_id, ours_queue) == _comparable(
        theirs_event, theirs_id, theirs_queue
    )
    subscriber.close()


def test_direct_sends_only_to_the_clients_own_redis(agents_redis_url: str) -> None:
    app = create_client_app(Settings(redis_url=agents_redis_url))
    base = agents_redis_url.rsplit("/", 1)[0]
    for settings in (
        Settings(redis_url=agents_redis_url, broker_url="amqp://guest:guest@127.0.0.1:5672//"),
        Settings(redis_url=agents_redis_url, broker_url=f"{base}/3"),
        Settings(redis_url=agents_redis_url + "?db=2"),
    ):
        assert DirectSend.for_settings(app, settings) is None, settings.broker


def test_without_task_events_a_direct_send_publishes_no_event(agents_redis_url: str) -> None:
    settings = Settings(redis_url=agents_redis_url)
    direct = DirectSend.for_settings(create_client_app(settings), settings)
    assert direct is not None
    assert direct.push(RUN_AGENT, "x", {}, kwargsrepr="{}", queue="q", priority=0).event is None
