"""A direct send writes what Celery's producer writes: the same list, message and event."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery, chain, signature
from celery.canvas import Signature

from celery_agents import Settings
from celery_agents.tasks.app import create_app, create_client_app
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


def _sender(
    create: Callable[[Settings], Celery], url: str, *, events: bool
) -> tuple[Celery, DirectSend]:
    settings = Settings(redis_url=url, task_events=events)
    app = create(settings)
    direct = DirectSend.for_settings(app, settings)
    assert direct is not None
    return app, direct


def _tapped(url: str) -> tuple[redis.Redis, redis.client.PubSub]:
    """A client, and a subscriber to task-sent events that is listening already."""
    client = redis.Redis.from_url(url)
    subscriber = client.pubsub()
    subscriber.psubscribe("*celeryev/task.sent")
    confirmed = subscriber.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "psubscribe"
    return client, subscriber


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_a_direct_send_writes_what_celery_writes(agents_redis_url: str, priority: int) -> None:
    app, direct = _sender(create_client_app, agents_redis_url, events=True)
    client, subscriber = _tapped(agents_redis_url)
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


def _stage(app: Celery, task_id: str, queue: str, priority: int, **options: Any) -> Signature:
    return app.signature(
        RUN_AGENT,
        kwargs=KWARGS,
        task_id=task_id,
        kwargsrepr='{"run_id": "r"}',
        argsrepr="()",
        queue=queue,
        priority=priority,
        **options,
    )


def _three_stages(app: Celery, tag: str, queue: str, priority: int) -> Signature:
    first, second, third = (_stage(app, f"{tag}-{i}", queue, priority) for i in range(3))
    second.set(ignore_result=True)
    return chain(first, second, third)


@pytest.mark.parametrize("events", [False, True])
@pytest.mark.parametrize("priority", [0, 7])
def test_a_captured_chain_start_and_next_step_write_what_celery_writes(
    agents_redis_url: str, priority: int, events: bool
) -> None:
    app, direct = _sender(create_app, agents_redis_url, events=events)
    client, subscriber = _tapped(agents_redis_url)
    tag = uuid.uuid4().hex[:8]
    theirs, ours = f"celery{tag}", f"direct{tag}"
    queues = {theirs: f"theirs-{tag}", ours: f"ours-{tag}"}

    def sent(who: str) -> tuple[str, dict[str, Any], tuple[str, dict[str, Any]] | None]:
        key, message = _only_list(client, queues[who])
        return key, message, (_event(subscriber) if events else None)

    def captured(who: str, send: Any) -> tuple[str, dict[str, Any], Any]:
        [push] = direct.capture(send)
        assert (push.event is not None) == events
        client.lpush(push.key, push.message)
        if push.event is not None:
            client.publish(*push.event)
        return sent(who)

    # The chain's start, as the TeamRun task sends it.
    _three_stages(app, theirs, queues[theirs], priority).apply_async()
    celery_start = sent(theirs)
    direct_start = captured(
        ours, lambda: _three_stages(app, ours, queues[ours], priority).apply_async()
    )
    # The next step, as a stage that ended sends it (AgentPool._continue).
    steps = {
        who: _body(start[1])[2]["chain"]
        for who, start in ((theirs, celery_start), (ours, direct_start))
    }

    def next_step(who: str) -> Any:
        return signature(steps[who][-1], app=app).apply_async(
            ({"status": "ok"},),
            chain=steps[who][:-1],
            parent_id=f"{who}-0",
            root_id=f"{who}-0",
            priority=priority,
        )

    next_step(theirs)
    celery_next = sent(theirs)
    direct_next = captured(ours, lambda: next_step(ours))

    for mine, celery in ((direct_start, celery_start), (direct_next, celery_next)):
        assert mine[0].replace(queues[ours], "<queue>") == celery[0].replace(
            queues[theirs], "<queue>"
        )
        assert _comparable(mine[1], ours, queues[ours]) == _comparable(
            celery[1], theirs, queues[theirs]
        )
        if events:
            assert mine[2][0] == celery[2][0]
            assert _comparable(mine[2][1], ours, queues[ours]) == _comparable(
                celery[2][1], theirs, queues[theirs]
            )
    subscriber.close()
