"""Hostile and bad input, injected for real: hand-made broker messages (pickle, bogus or
oversized JSON, unknown providers) sent with kombu, prompt and message size limits on both
sides, and provider secrets that must never leave the workers."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Exchange, Producer

from celery_agents import (
    Agent,
    Job,
    ModelError,
    RunHandle,
    Settings,
    Team,
    UnknownProviderError,
    UserError,
)
from celery_agents.config.manifest import AgentSpec
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.errors import InvalidPayloadError
from celery_agents.facade.client import configure, get_client
from celery_agents.facade.team import TeamRun
from celery_agents.tasks.canvas import build_canvas
from celery_agents.tasks.names import RUN_AGENT
from celery_agents.tasks.payload import RunPayload
from celery_agents.tasks.tree import TreePayload
from celery_agents.tasks.wire import payload_bytes
from celery_agents.testing.scripted_server import Fail, Reply, ScriptedModelServer
from tests.support.events import FlowerFeed

pytestmark = pytest.mark.usefixtures("agents")

ROOT = Path(__file__).resolve().parent.parent


# --- sending by hand, as a hostile sender would ----------------------------------------------


def publish_raw(body: Any, *, task_id: str, serializer: str = "json") -> None:
    """Put a ``run_agent`` message on the facade's queue with kombu alone (no Celery client):
    Celery's message protocol 2, the task named in the headers, ``(args, kwargs, embed)``."""
    client = get_client()
    queue = client.settings.queue
    headers = {
        "lang": "py",
        "task": RUN_AGENT,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "hostile@test",
    }
    with client.app.connection_for_write() as connection:
        Producer(connection).publish(
            body,
            exchange=Exchange(queue, type="direct"),
            routing_key=queue,
            serializer=serializer,
            headers=headers,
            correlation_id=task_id,
        )


def task_body(payload: Any) -> tuple[Any, ...]:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return ((), {"payload": payload}, embed)


def run_payload(run_id: str, **agent: Any) -> dict[str, Any]:
    spec = AgentSpec(name="crafted", **{"model": "scripted:model", **agent})
    payload = RunPayload(run_id=run_id, agent=spec, prompt="x", conversation_id="c", timeout=20)
    return payload.model_dump(mode="json")


def log_of(worker: WorkerProcess) -> str:
    return worker.log_path.read_text(errors="replace")


async def echo(text: str = "still here") -> None:
    """A normal run after a hostile one: the worker is healthy and consuming. On a worker
    with concurrency 1 it also means the hostile message was fully handled (and logged)."""
    assert (await Agent("after", "test:echo").run(text)).content == text


class MakesDirectory:
    """Unpickling this creates ``path``: proof that pickle content was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


# --- 1. JSON only ----------------------------------------------------------------------------


async def test_a_pickle_message_is_discarded_unread_and_the_worker_runs_on(
    private_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = private_worker(concurrency=1)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(MakesDirectory(probe)))  # the payload is live: loading it acts
    assert probe.is_dir()

    marker = tmp_path / "pwned"
    run_id = uuid.uuid4().hex
    publish_raw(task_body(MakesDirectory(marker)), task_id=run_id, serializer="pickle")
    await echo()

    assert not marker.exists()
    assert worker.process.poll() is None
    assert await RunHandle.attach(run_id).status() == "unknown"  # nothing ran, nothing recorded
    assert "Refusing to deserialize untrusted content of type pickle" in log_of(worker)


# --- 2. payloads validated before anything runs ----------------------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"exec": "import os"}, r"exec: Extra inputs are not permitted"),
        ({"agent": {"model": "scripted:m", "api_key": "x"}}, r"agent.api_key: Extra inputs"),
        ({"timeout": -1}, r"timeout: Input should be greater than 0"),
        ({"lineage": [{"run_id": "r", "name": "n"}] * 50}, r"lineage: List should have at most"),
        ({"forwarded_from": ["n" * 5000]}, r"forwarded_from.0: String should have at most 4096"),
    ],
)
async def test_a_raw_json_message_with_a_bogus_payload_is_refused_before_anything_runs(
    scripted_model: ScriptedModelServer, change: dict[str, Any], error: str
) -> None:
    run_id = uuid.uuid4().hex
    publish_raw(task_body({**run_payload(run_id), **change}), task_id=run_id)
    with pytest.raises(InvalidPayloadError, match=error):
        await RunHandle.attach(run_id).result(timeout=20)
    assert scripted_model.request_count == 0
    await echo()


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {"evil": 1}, r"unexpected 'evil'"),
        ((None, "x", "y"), {}, r"unexpected argument 2, argument 3"),
    ],
)
async def test_a_raw_message_with_arguments_the_task_does_not_take_is_refused(
    scripted_model: ScriptedModelServer, args: tuple[Any, ...], kwargs: dict[str, Any], error: str
) -> None:
    run_id = uuid.uuid4().hex
    _, payload, embed = task_body(run_payload(run_id))
    publish_raw((args, {**payload, **kwargs}, embed), task_id=run_id)
    with pytest.raises(InvalidPayloadError, match=error):
        await RunHandle.attach(run_id).result(timeout=20)
    assert scripted_model.request_count == 0
    await echo()


@pytest.mark.parametrize(
    "body", [((), 5, {}), ((), {"payload": {}}, ["chain"]), ("args", {}, None), [1, 2]]
)
async def test_a_message_body_of_the_wrong_shape_is_dropped_alone_and_the_worker_runs_on(
    private_worker: Callable[..., WorkerProcess], body: tuple[Any, ...]
) -> None:
    worker = private_worker(concurrency=1)
    run_id = uuid.uuid4().hex
    publish_raw(body, task_id=run_id)
    await echo()  # handled (concurrency 1), and the worker is still consuming
    assert worker.process.poll() is None
    assert "Received invalid task message" in log_of(worker)  # logged, then dropped


async def test_a_message_cannot_speak_for_another_run(scripted_model: ScriptedModelServer) -> None:
    victim, sender = uuid.uuid4().hex, uuid.uuid4().hex
    publish_raw(task_body(run_payload(victim)), task_id=sender)
    with pytest.raises(InvalidPayloadError, match=f"run_id '{victim}' is not the task id"):
        await RunHandle.attach(sender).result(timeout=20)
    assert await RunHandle.attach(victim).status() == "unknown"
    assert scripted_model.request_count == 0


# --- 4. unregistered providers (tools: test_bad_input.py) ------------------------------------


@pytest.mark.parametrize(("model", "provider"), [("evil:model", "evil"), ("os:system", "os")])
async def test_a_message_naming_an_unknown_provider_is_refused_and_logged(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    model: str,
    provider: str,
) -> None:
    worker = private_worker(concurrency=1)
    run_id = uuid.uuid4().hex
    publish_raw(task_body(run_payload(run_id, model=model)), task_id=run_id)
    with pytest.raises(
        UnknownProviderError, match=rf"unknown provider '{provider}' in model '{model}' \(known: "
    ):
        await RunHandle.attach(run_id).result(timeout=20)
    await echo()
    assert scripted_model.request_count == 0
    assert f"run_id={run_id} agent=crafted model={model} status=failed" in log_of(worker)
    assert "error=UnknownProviderError" in log_of(worker)


# --- 3. prompt and message size limits -------------------------------------------------------

PROMPT_LIMIT = 50
BYTES_LIMIT = 4000
TOO_LONG = "p" * (PROMPT_LIMIT + 1)
PROMPT_ERROR = (
    r"prompt too long: 51 characters, over the limit of 50 \(max_prompt_chars; "
    r"raise it with CELERY_AGENTS_MAX_PROMPT_CHARS on clients and workers alike\)"
)


@pytest.fixture
def small_limits(agents: Settings) -> Iterator[Settings]:
    """The facade with small limits, on a queue no worker consumes (to see what was sent)."""
    settings = agents.model_copy(
        update={
            "max_prompt_chars": PROMPT_LIMIT,
            "max_payload_bytes": BYTES_LIMIT,
            "queue": f"nobody-{uuid.uuid4().hex[:8]}",
        }
    )
    configure(settings)
    try:
        yield settings
    finally:
        configure(agents)


def queued_keys(settings: Settings) -> list[bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return list(client.scan_iter(match=f"{settings.queue}*"))
    finally:
        client.close()


async def _drain(iterator: Any) -> None:
    async for _ in iterator:
        pass


def _entry_points() -> dict[str, Callable[[str], Any]]:
    agent = Agent("a", "scripted:model")
    other = Agent("b", "test:echo")
    job = Job(name="j", prompt=TOO_LONG)
    return {
        "Agent.run": lambda p: agent.run(p),
        "Agent.run_sync": lambda p: _sync(lambda: agent.run_sync(p)),
        "Agent.submit": lambda p: agent.submit(p),
        "Agent.run_iter": lambda p: _drain(agent.run_iter(p)),
        "Agent.run_stream": lambda p: _sync(lambda: agent.run_stream(p)),
        "Agent.run_job": lambda p: agent.run_job(job),
        "Agent.run_in_background": lambda p: agent.run_in_background(p, max_count=1),
        "Team.run": lambda p: (agent & other).run(p),
        "Team.run_iter": lambda p: _drain((agent & other).run_iter(p)),
        "Team.run_job": lambda p: (agent & other).run_job(job),
        "Team.run_in_background": lambda p: (agent & other).run_in_background(p, max_count=1),
        "TeamRun.run": lambda p: (agent | other).run(p),
        "TeamRun.run_stream": lambda p: _sync(lambda: (agent | other).run_stream(p)),
        "TeamRun.execute_iter": lambda p: _drain((agent | other).execute_iter(p)),
    }


async def _sync(call: Callable[[], Any]) -> Any:
    return call()


@pytest.mark.parametrize("entry", list(_entry_points()))
async def test_an_over_long_prompt_is_refused_before_sending(
    small_limits: Settings, scripted_model: ScriptedModelServer, entry: str
) -> None:
    start = _entry_points()[entry]
    with pytest.raises(InvalidPayloadError, match=PROMPT_ERROR) as info:
        await start(TOO_LONG)
    assert info.value.details == {
        "limit": "max_prompt_chars",
        "maximum": PROMPT_LIMIT,
        "actual": PROMPT_LIMIT + 1,
        "env": "CELERY_AGENTS_MAX_PROMPT_CHARS",
    }
    assert queued_keys(small_limits) == []
    assert scripted_model.request_count == 0


async def test_a_prompt_at_the_limit_is_sent(small_limits: Settings) -> None:
    handle = await Agent("a", "test:echo").submit("p" * PROMPT_LIMIT)
    assert queued_keys(small_limits) != []
    await handle.cancel()
    client = redis.Redis.from_url(small_limits.redis_url)
    try:
        client.delete(*queued_keys(small_limits))  # nobody consumes this queue: no leftovers
    finally:
        client.close()


async def test_an_over_large_run_message_is_refused_before_sending(
    small_limits: Settings,
) -> None:
    big = Agent("a", "test:echo", system_prompt="s" * BYTES_LIMIT)
    pattern = (
        r"run message too large: 4,\d{3} bytes of JSON, over the limit of 4,000 "
        r"\(max_payload_bytes; raise it with CELERY_AGENTS_MAX_PAYLOAD_BYTES"
    )
    with pytest.raises(InvalidPayloadError, match=pattern) as info:
        await big.run("hi")
    assert info.value.details["actual"] > BYTES_LIMIT
    with pytest.raises(InvalidPayloadError, match=pattern):
        await (big & Agent("b", "test:echo")).run("hi")
    assert queued_keys(small_limits) == []


@pytest.fixture
def strict_worker(private_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A worker whose limits are smaller than its clients' (the facade keeps the defaults)."""
    return private_worker(
        extra_env={
            "CELERY_AGENTS_MAX_PROMPT_CHARS": str(PROMPT_LIMIT),
            "CELERY_AGENTS_MAX_PAYLOAD_BYTES": str(BYTES_LIMIT),
        }
    )


async def test_the_worker_refuses_an_over_long_prompt_and_runs_the_rest(
    strict_worker: WorkerProcess, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Reply("fine"))
    agent = Agent("a", "scripted:model")
    long_run = await agent.submit(TOO_LONG)
    normal = await agent.submit("short")
    with pytest.raises(InvalidPayloadError, match=PROMPT_ERROR):
        await long_run.result(timeout=20)
    with pytest.raises(InvalidPayloadError, match=PROMPT_ERROR):
        await (Agent("b", "test:echo") & Agent("c", "test:echo")).run(TOO_LONG)
    assert (await normal.result(timeout=20)).content == "fine"
    assert scripted_model.request_count == 1
    assert strict_worker.process.poll() is None


async def test_the_worker_refuses_a_crafted_over_large_message(
    strict_worker: WorkerProcess, scripted_model: ScriptedModelServer
) -> None:
    run_id = uuid.uuid4().hex
    payload = run_payload(run_id, system_prompt="s" * BYTES_LIMIT)
    publish_raw(task_body(payload), task_id=run_id)
    with pytest.raises(InvalidPayloadError, match=r"run message too large: 4,\d{3} bytes"):
        await RunHandle.attach(run_id).result(timeout=20)
    assert scripted_model.request_count == 0
    await echo()


async def test_a_team_run_that_fits_runs_every_member_whatever_routing_they_carry(
    strict_worker: WorkerProcess,
) -> None:
    """A Team's member messages repeat the tree's names in their routing (lineage, hand-off,
    forwarded_from): that must not push a member over the limit its tree was under."""
    first = Agent("f" * 400, "test:echo")
    second = Agent("s" * 400, "test:echo")

    def tree_of(chain: TeamRun) -> TreePayload:
        return TreePayload(
            run_id=uuid.uuid4().hex,
            node=chain.to_node(),
            prompt="go",
            timeout=get_client().settings.run_timeout,
        )

    base = payload_bytes(tree_of(first | second).model_dump(mode="json"))
    second = Agent("s" * 400, "test:echo", system_prompt="x" * (BYTES_LIMIT - 5 - base))
    chain = first | second
    tree = tree_of(chain)
    assert BYTES_LIMIT - 10 < payload_bytes(tree.model_dump(mode="json")) <= BYTES_LIMIT
    # Counted whole, the second stage's message would be over the limit.
    stages = build_canvas(get_client().app, tree).tasks
    whole = len(json.dumps(stages[1].kwargs["payload"], separators=(",", ":")))
    assert whole > BYTES_LIMIT

    message = await chain.run("go")
    assert message.content == "go"
    assert message.forwarded_from == [first.name]


def test_names_that_every_member_message_repeats_are_bounded() -> None:
    with pytest.raises(UserError, match="an agent name has at most 4096 characters, got 4097"):
        Agent("a" * 4097, "test:echo")
    wide = [Agent(f"{i:0>100}", "test:echo") for i in range(41)]
    with pytest.raises(UserError, match=r"a Team name has at most 4096 characters.*name="):
        Team(wide)
    assert Team(wide, name="wide").name == "wide"


# --- 5. secrets stay on the workers ----------------------------------------------------------

SECRET = f"sk-celery-agents-{uuid.uuid4().hex}"


def redis_contents(url: str) -> str:
    """Every key and value in the Redis, with the bodies of broker messages decoded."""
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            values: list[Any] = []
            if kind == "string":
                values = [client.get(key)]
            elif kind == "hash":
                values = [v for pair in client.hgetall(key).items() for v in pair]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = client.zrange(key, 0, -1)
            elif kind == "stream":
                values = [v for _, f in client.xrange(key) for pair in f.items() for v in pair]
            parts += [key, *(v for v in values if v is not None)]
    finally:
        client.close()
    return "\n".join(_readable(part) for part in parts)


def _readable(raw: bytes) -> str:
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return "\n".join([text, *_bodies(data)])


def _bodies(data: Any) -> Iterator[str]:
    """The decoded bodies of the kombu envelopes in ``data`` (queued and unacked messages)."""
    if isinstance(data, list):
        for item in data:
            yield from _bodies(item)
    elif isinstance(data, dict) and data.get("properties", {}).get("body_encoding") == "base64":
        yield base64.b64decode(data["body"]).decode(errors="replace")


async def test_a_providers_key_appears_in_no_message_result_event_key_log_or_flower(
    private_worker: Callable[..., WorkerProcess],
    scripted_model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYED_API_KEY", SECRET)  # the client has it too: it must not send it
    worker = private_worker(
        extra_env={"KEYED_API_KEY": SECRET, "CELERY_AGENTS_TASK_EVENTS": "true"}
    )
    settings = get_client().settings
    agent = Agent("keyed", "keyed:model")
    scripted_model.script(Reply("all good"))
    parked_queue = f"parked-{uuid.uuid4().hex[:8]}"
    with FlowerFeed(get_client().app) as flower:
        handle = await agent.submit("hello keyed")
        message = await handle.result(timeout=30)
        events = [event async for event in handle.events(timeout=10)]
        parked = await agent.submit("parked prompt", queue=parked_queue)  # nobody consumes it
        # Two messages that nobody consumes: their bodies, as queued, are looked at too.
        parked_direct = await agent.submit("parked direct prompt", queue=parked_queue)
        flower.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == handle.run_id)
    try:
        stored = redis_contents(settings.redis_url)
    finally:
        client = redis.Redis.from_url(settings.redis_url)
        client.delete(*client.scan_iter(match=f"{parked_queue}*"))
        client.close()
        await parked.cancel()
        await parked_direct.cancel()
    assert message.content == "all good"

    seen = {
        "the result": message.model_dump_json(),
        "the run's events": json.dumps([e.model_dump(mode="json") for e in events]),
        "Redis (keys, values, queued messages)": stored,
        "the worker's log": log_of(worker),
        "Flower's event feed": flower.text(),
    }
    # Each place was really looked at: the run (and the parked message) is in it.
    assert "parked prompt" in stored and "parked direct prompt" in stored
    assert re.search(rf"task-received.*{handle.run_id}", flower.text())
    assert handle.run_id in seen["the worker's log"]
    for place, text in seen.items():
        assert SECRET not in text, f"the provider's key leaked into {place}"


async def test_a_provider_echoing_the_key_in_its_error_leaks_it_nowhere(
    private_worker: Callable[..., WorkerProcess], scripted_model: ScriptedModelServer
) -> None:
    worker = private_worker(concurrency=1, extra_env={"KEYED_API_KEY": SECRET})
    scripted_model.script(Fail(401, message=f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(ModelError, match="HTTP 401") as info:
        await Agent("keyed", "keyed:model").run("hello", timeout=20)
    await echo()
    assert SECRET not in json.dumps(info.value.to_json())
    assert SECRET not in log_of(worker)


# --- 7. Flower requires auth -----------------------------------------------------------------


def test_nothing_deployed_opens_flowers_api_without_auth() -> None:
    for name in ("compose.yaml", "Dockerfile"):
        assert "FLOWER_UNAUTHENTICATED_API" not in (ROOT / name).read_text(), name
