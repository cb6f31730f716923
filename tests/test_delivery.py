"""Delivering runs' outcomes on a real Redis to a real webhook receiver and to files: signed
bodies, retries with one webhook-id, a receiver that is down, giving up and retrying by hand,
a run's end queued twice, secrets that never reach Redis, and bad targets refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from celery_agents.config.deliver import (
    DeliverTarget,
    FileTarget,
    WebhookTarget,
    parse_deliver,
)
from celery_agents.errors import UserError
from celery_agents.keys import Keys
from celery_agents.messages import ChatMessage
from celery_agents.scheduler.deliverer import Deliverer
from celery_agents.scheduler.deliveries import failed_deliveries, retry_deliveries
from celery_agents.scheduler.delivery import DeliveryQueue, delivery_body
from celery_agents.store.entry import RunEntry
from celery_agents.text import as_text
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
CONSUMER = "deliverer-test@host"


@pytest.fixture
def client(redis_client: aioredis.Redis) -> aioredis.Redis:
    return redis_client


@pytest.fixture
def sync_client(agents_redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(agents_redis_url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as r:
        yield r


@pytest.fixture
def hook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a variable holding SECRET (the deliverer runs in this process)."""
    name = f"HOOK_SECRET_{uuid.uuid4().hex[:6].upper()}"
    monkeypatch.setenv(name, SECRET)
    return name


def ended(run_id: str | None = None) -> RunEntry:
    return RunEntry(
        run_id=run_id or uuid.uuid4().hex,
        name="analyst",
        state="succeeded",
        ended_at=time.time(),
        input_tokens=3,
        output_tokens=5,
        requests=1,
        prompt="How did sales do?",
        message=ChatMessage(content="Up 3%.", name="analyst"),
    )


async def queue(
    client: aioredis.Redis, keys: Keys, entry: RunEntry, *targets: DeliverTarget
) -> list[Any]:
    async with client.pipeline(transaction=True) as pipe:  # as a run's end does
        DeliveryQueue(keys).queue(pipe, entry, targets)
        return list(await pipe.execute())


def deliverer(client: aioredis.Redis, keys: Keys, **kw: Any) -> Deliverer:
    options = {"first_backoff": 0.05, "poll": 1.0, **kw}
    return Deliverer(client, keys, consumer=CONSUMER, **options)


@contextlib.asynccontextmanager
async def running(d: Deliverer) -> AsyncIterator[Deliverer]:
    task = asyncio.create_task(d.run_forever())
    try:
        yield d
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], object], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def state_of(client: aioredis.Redis, keys: Keys, delivery_id: str) -> dict[str, str]:
    raw = await client.hgetall(keys.delivery(delivery_id))
    return {as_text(k): as_text(v) for k, v in raw.items()}


async def test_a_webhook_delivery_is_signed_and_only_a_full_one_carries_the_message(
    client: aioredis.Redis, keys: Keys, receiver: WebhookReceiver, hook_secret: str
) -> None:
    receiver.start()
    entry = ended()
    thin = WebhookTarget(webhook=receiver.url + "?thin", secret_env=hook_secret)
    full = WebhookTarget(webhook=receiver.url + "?full", secret_env=hook_secret, payload="full")
    assert await queue(client, keys, entry, thin, full) == [1, 1]
    async with running(deliverer(client, keys)):
        got = await receiver.wait_accepted(2)
    bodies = {}
    for request in got:
        body = Webhook(SECRET).verify(request.body, request.headers)  # raises if not signed
        assert request.headers["webhook-id"] == entry.run_id
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "celery-agents"
        bodies[request.path.rpartition("?")[2]] = body
    assert bodies["thin"] == delivery_body(entry, full=False)
    assert bodies["full"]["data"]["message"]["content"] == "Up 3%."
    assert bodies["full"]["data"]["prompt"] == "How did sales do?"
    assert "message" not in bodies["thin"]["data"]
    data = bodies["thin"]["data"]
    assert (bodies["thin"]["type"], data["run_id"], data["state"]) == (
        "run.succeeded",
        entry.run_id,
        "succeeded",
    )
    assert data["usage"] == {"input_tokens": 3, "output_tokens": 5, "requests": 1}


async def test_a_receiver_answering_503_three_times_gets_one_delivery_on_the_fourth_attempt(
    client: aioredis.Redis, keys: Keys, receiver: WebhookReceiver, hook_secret: str
) -> None:
    receiver.start().fail_first(3)
    entry = ended()
    await queue(client, keys, entry, WebhookTarget(webhook=receiver.url, secret_env=hook_secret))
    d = deliverer(client, keys)
    async with running(d):
        await receiver.wait_accepted(1)
        await until(lambda: d.delivered == 1)
    assert [r.status for r in receiver.requests] == [503, 503, 503, 200]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {entry.run_id}
    state = await state_of(client, keys, f"{entry.run_id}:0")
    assert (state["state"], state["attempts"]) == ("delivered", "4")
    assert state["last_error"] == "HTTP 503"  # the last failed attempt's, kept
    assert await client.zcard(keys.deliveries_pending()) == 0


async def test_a_receiver_that_is_down_at_first_gets_the_delivery_once_it_is_up(
    client: aioredis.Redis, keys: Keys, receiver: WebhookReceiver, hook_secret: str
) -> None:
    entry = ended()
    await queue(client, keys, entry, WebhookTarget(webhook=receiver.url, secret_env=hook_secret))
    d = deliverer(client, keys)
    async with running(d):
        await until(lambda: d.failed_attempts >= 1)
        last_error = (await state_of(client, keys, f"{entry.run_id}:0"))["last_error"]
        assert last_error.startswith("cannot connect")
        receiver.start()
        await receiver.wait_accepted(1)
        await until(lambda: d.delivered == 1)
    assert len(receiver.requests) == 1


async def test_a_delivery_past_max_age_is_failed_listed_and_delivered_once_retried(
    client: aioredis.Redis,
    sync_client: redis.Redis,
    keys: Keys,
    receiver: WebhookReceiver,
    hook_secret: str,
) -> None:
    receiver.start().always(503)
    entry = ended()
    await queue(client, keys, entry, WebhookTarget(webhook=receiver.url, secret_env=hook_secret))
    d = deliverer(client, keys, max_age=0.3)
    async with running(d):
        await until(lambda: failed_deliveries(sync_client, keys))
        [failed] = failed_deliveries(sync_client, keys)
        assert (failed.id, failed.run_id, failed.target) == (
            f"{entry.run_id}:0",
            entry.run_id,
            receiver.url,
        )
        assert failed.last_error == "HTTP 503"
        assert failed.attempts == len(receiver.requests) >= 2
        assert await client.zcard(keys.deliveries_pending()) == 0
        with pytest.raises(UserError, match="no failed delivery 'nope:0'"):
            retry_deliveries(sync_client, keys, ["nope:0"])

        receiver.always(200)
        assert retry_deliveries(sync_client, keys, None) == 1
        d.wake()
        await receiver.wait_accepted(1)
        await until(lambda: d.delivered == 1)
    assert failed_deliveries(sync_client, keys) == []
    state = await state_of(client, keys, failed.id)
    assert state["state"] == "delivered"
    assert int(state["attempts"]) == failed.attempts + 1  # kept across the retry
    assert len(receiver.accepted) == 1


async def test_a_file_target_gets_one_json_line_per_run(
    client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "not-yet" / "runs.jsonl"  # its directory is made
    first, second = ended(), ended()
    target = FileTarget(file=str(path))
    await queue(client, keys, first, target)
    await queue(client, keys, second, target)
    d = deliverer(client, keys)
    async with running(d):
        await until(lambda: d.delivered == 2)
    lines = path.read_text().splitlines()
    assert sorted(json.loads(line)["data"]["run_id"] for line in lines) == sorted(
        [first.run_id, second.run_id]
    )


async def test_a_run_whose_end_is_queued_twice_is_delivered_once(
    client: aioredis.Redis, keys: Keys, receiver: WebhookReceiver, hook_secret: str
) -> None:
    receiver.start()
    entry = ended()
    target = WebhookTarget(webhook=receiver.url, secret_env=hook_secret)
    assert await queue(client, keys, entry, target) == [1]
    assert await queue(client, keys, entry, target) == [0]  # the redelivered run's end
    d = deliverer(client, keys)
    async with running(d):
        await until(lambda: d.delivered == 1)
        # Later still, once delivered: the tombstone keeps it from being queued again.
        assert await queue(client, keys, entry, target) == [0]
        assert await client.zcard(keys.deliveries_pending()) == 0
    assert len(receiver.requests) == 1


async def test_a_missing_or_malformed_secret_is_named_and_no_secret_reaches_redis_or_logs(
    client: aioredis.Redis,
    keys: Keys,
    receiver: WebhookReceiver,
    hook_secret: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.start()
    missing, malformed = "HOOK_MISSING_" + uuid.uuid4().hex[:6].upper(), "HOOK_NOT_A_SECRET"
    monkeypatch.delenv(missing, raising=False)
    monkeypatch.setenv(malformed, "hunter2-but-not-base64!")
    entry = ended()
    targets = [
        WebhookTarget(webhook=receiver.url, secret_env=name)
        for name in (hook_secret, missing, malformed)
    ]
    await queue(client, keys, entry, *targets)
    d = deliverer(client, keys, first_backoff=10)
    with caplog.at_level(logging.INFO, logger="celery_agents.scheduler.deliverer"):
        async with running(d):
            await until(lambda: d.delivered == 1 and d.failed_attempts == 2)
    assert len(receiver.requests) == 1  # nothing unsigned was sent
    missing_state = await state_of(client, keys, f"{entry.run_id}:1")
    assert missing_state["last_error"] == f"{missing} is not set on {CONSUMER}"
    malformed_state = await state_of(client, keys, f"{entry.run_id}:2")
    assert malformed in malformed_state["last_error"]
    assert "whsec_" in malformed_state["last_error"]

    stored = []
    async for key in client.scan_iter(match=f"{keys.prefix}:*"):
        kind = as_text(await client.type(key))
        if kind == "hash":
            stored += [f"{as_text(k)}={as_text(v)}" for k, v in (await client.hgetall(key)).items()]
        elif kind == "zset":
            stored += [as_text(member) for member in await client.zrange(key, 0, -1)]
        else:
            stored.append(repr(await client.dump(key)))
    assert stored  # the scan saw the deliveries
    for secret in (SECRET, SECRET.removeprefix("whsec_"), "hunter2-but-not-base64!"):
        assert not [value for value in stored if secret in value]
        assert secret not in caplog.text
    assert missing in caplog.text  # the log says what to fix


async def test_wake_starts_a_delivery_long_before_the_next_poll(
    client: aioredis.Redis, keys: Keys, receiver: WebhookReceiver, hook_secret: str
) -> None:
    receiver.start()
    target = WebhookTarget(webhook=receiver.url, secret_env=hook_secret)
    await queue(client, keys, ended(), target)
    d = deliverer(client, keys, poll=30)
    async with running(d):
        await receiver.wait_accepted(1)  # its first round; now it naps for 30 s
        await queue(client, keys, ended(), target)
        d.wake()
        await receiver.wait_accepted(2, timeout=5)


async def test_a_cancel_that_comes_with_a_wake_still_stops_the_deliverer(
    client: aioredis.Redis, keys: Keys
) -> None:
    d = deliverer(client, keys, poll=30)
    task = asyncio.create_task(d.run_forever())
    try:
        await until(lambda: d.napping)  # nothing is due: it naps for 30 s
        d.wake()  # a run ended as the worker shuts down
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
    finally:
        task.cancel()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"webhook": "ftp://x"}, "deliver[0]: webhook: must be an http:// or https:// URL"),
        ({"webhook": "http://x", "secret": "s"}, "deliver[0]: secret: a secret may not be given"),
        ({}, "deliver[0]: give exactly one of 'webhook' or 'file'"),
        ({"webhook": "http://x", "file": "f"}, "deliver[0]: give exactly one of 'webhook'"),
        ({"webhook": "http://x", "secret_env": "NOT A NAME"}, "deliver[0]: secret_env: must"),
        ({"file": " "}, "deliver[0]: file: must be a path"),
    ],
)
def test_a_bad_target_is_refused_naming_its_place_and_problem(
    raw: dict[str, Any], problem: str
) -> None:
    with pytest.raises(UserError) as caught:
        parse_deliver([raw])
    assert caught.value.message.startswith(problem), caught.value.message


def test_the_second_bad_target_is_named_by_its_index() -> None:
    with pytest.raises(UserError, match=r"^deliver\[1\]: "):
        parse_deliver([{"file": "ok.jsonl"}, {"webhook": "nope"}])
    assert parse_deliver(None) == []
    assert parse_deliver([{"webhook": "https://example.com/h", "secret_env": "hook_secret"}])
