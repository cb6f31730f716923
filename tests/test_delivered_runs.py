"""Runs that report back: a run's, a Team's and a schedule's outcome delivered by real workers
to a real webhook receiver on loopback (signed, verified with ``standardwebhooks``) and to files."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from standardwebhooks import Webhook

from celery_agents import Agent, ModelError, UserError
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.keys import Keys
from tests.conftest import Stack
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_cli import cli

pytestmark = pytest.mark.usefixtures("agents")

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
SIGNING = {"HOOK_SECRET": SECRET, "CELERY_AGENTS_DELIVERY_FIRST_BACKOFF": "0.1"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as r:
        yield r


@pytest.fixture
def signing_worker(private_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A worker that holds the webhook secret (the caller never does), on keys of its own:
    the session's worker, without the secret, would take its deliveries too."""
    return private_worker(extra_env=SIGNING, key_prefix=f"signing-{uuid.uuid4().hex[:8]}")


def body(received: object) -> dict[str, object]:
    return json.loads(received.body)  # type: ignore[attr-defined, no-any-return]


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def lines(path: Path, count: int, *, timeout: float = 10.0) -> list[dict[str, object]]:
    """The file's JSON lines, once there are ``count`` (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    while True:
        found = read_lines(path)
        if len(found) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in found]
        await asyncio.sleep(0.05)


@pytest.mark.usefixtures("signing_worker")
async def test_a_runs_outcome_is_delivered_signed_and_to_a_file(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.start()
    out = tmp_path / "out" / "runs.jsonl"
    message = await Agent("notifier", "test:echo").run(
        "report this",
        deliver=[
            {"webhook": receiver.url, "secret_env": "HOOK_SECRET", "payload": "full"},
            {"file": str(out)},
        ],
    )
    [hook] = await receiver.wait_accepted(1)
    assert hook.headers["webhook-id"] == message.run_id
    data = Webhook(SECRET).verify(hook.body, hook.headers)["data"]
    assert (data["run_id"], data["state"], data["name"]) == (
        message.run_id,
        "succeeded",
        "notifier",
    )
    assert data["message"]["content"] == "report this"
    assert data["usage"]["output_tokens"] == message.usage.output_tokens
    [line] = await lines(out, 1)
    assert line["type"] == "run.succeeded" and "message" not in line["data"]  # thin
    assert line["data"]["run_id"] == message.run_id  # type: ignore[index]


@pytest.mark.usefixtures("signing_worker")
async def test_a_failed_run_and_a_team_are_delivered_once_each(tmp_path: Path) -> None:
    out = tmp_path / "ends.jsonl"
    with pytest.raises(ModelError):
        await Agent("doomed", "test:fail").run("x", deliver=[{"file": str(out)}])
    team = Agent("a", "test:echo") & Agent("b", "test:echo")
    talks = await team.run("y", deliver=[{"file": str(out)}])
    ends = await lines(out, 2)
    assert [(e["type"], e["data"]["kind"]) for e in ends] == [  # type: ignore[index]
        ("run.failed", "agent"),
        ("run.succeeded", "team"),
    ]
    assert ends[0]["data"]["error"]["type"] == "ModelError"  # type: ignore[index]
    assert ends[1]["data"]["run_id"] == talks.run_id  # type: ignore[index]
    assert len(await lines(out, 3, timeout=0.5)) == 2  # members deliver nothing of their own


async def test_a_bad_target_is_refused_before_anything_is_queued() -> None:
    with pytest.raises(UserError, match=r"deliver\[0\]: .*http"):
        await Agent("x", "test:echo").run("x", deliver=[{"webhook": "ftp://example.com"}])
    with pytest.raises(UserError, match="inline"):
        await Agent("x", "test:echo").run(
            "x", deliver=[{"webhook": "https://example.com", "secret": "s"}]
        )


async def test_a_schedule_delivers_each_fire_through_a_receiver_that_was_down(
    stack: Callable[..., Stack], receiver: WebhookReceiver
) -> None:
    s = stack(
        env=SIGNING,
        schedules={
            "reporter": {
                "agent": "writer",
                "prompt": "the daily report",
                "every": 3600,
                "deliver": [{"webhook": receiver.url, "secret_env": "HOOK_SECRET"}],
            }
        },
    )
    client = redis.Redis.from_url(s.redis_url)
    keys = Keys(s.prefix)
    try:
        deadline = time.monotonic() + 20
        while (
            not (pending := client.zrange(keys.deliveries_pending(), 0, -1))
            or int(client.hget(keys.delivery(pending[0].decode()), "attempts") or 0) < 2
        ):  # the receiver is down: attempts fail, the delivery waits
            assert time.monotonic() < deadline, "no delivery was attempted"
            await asyncio.sleep(0.05)
        receiver.fail_first(1)  # up, but failing once more
        receiver.start()
        [accepted] = await receiver.wait_accepted(1, timeout=15)
    finally:
        client.close()
    run_id = accepted.headers["webhook-id"]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {run_id}
    assert len(receiver.requests) == 2
    data = Webhook(SECRET).verify(accepted.body, accepted.headers)["data"]
    assert (data["schedule"], data["state"]) == ("reporter", "succeeded")
    assert "message" not in data  # thin by default
    assert len(receiver.accepted) == 1


async def test_deliveries_that_gave_up_are_listed_and_retried_from_the_cli(
    stack: Callable[..., Stack], receiver: WebhookReceiver
) -> None:
    s = stack(env={**SIGNING, "CELERY_AGENTS_DELIVERY_MAX_AGE": "1"}, beat=False)
    env = {**s.processes[0].env, "CELERY_AGENTS_DELIVERY_MAX_AGE": "1"}
    receiver.always(503)
    receiver.start()
    message = await Agent("notifier", "test:echo").run(
        "x", deliver=[{"webhook": receiver.url, "secret_env": "HOOK_SECRET"}]
    )
    deadline = time.monotonic() + 20
    while not (failed := json.loads(cli("deliveries", "failed", "--json", env=env).stdout)):
        assert time.monotonic() < deadline, "the delivery never gave up"
        await asyncio.sleep(0.2)
    [gave_up] = failed
    assert gave_up["run_id"] == message.run_id and gave_up["last_error"] == "HTTP 503"
    assert gave_up["target"] == receiver.url and gave_up["attempts"] >= 2
    receiver.always(200)
    retried = cli("deliveries", "retry", "--all", env=env)
    assert retried.stdout.strip() == "1 deliveries queued again", retried.stderr
    [accepted] = await receiver.wait_accepted(1, timeout=15)
    assert accepted.headers["webhook-id"] == message.run_id
    assert json.loads(cli("deliveries", "failed", "--json", env=env).stdout) == []
    refused = cli("deliveries", "retry", env=env)
    assert refused.returncode == 1 and "--all" in refused.stderr
