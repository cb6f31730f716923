"""The HTTP API over real HTTP (``celery-agents serve`` in a subprocess) against the session's
real worker: runs created, waited for, streamed and resumed, cancelled, scoped by tenant."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis

from celery_agents import Agent, Settings
from celery_agents.embedded.api_server import ApiProcess
from celery_agents.keys import Keys
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.support.http_api import Sse, api, bearer, new_key, read_sse
from tests.support.store import forget_stored, wait_stored
from tests.test_cli import cli

__all__ = ["api"]  # the module's server (a fixture)

pytestmark = pytest.mark.usefixtures("agents")


@pytest.fixture(scope="module")
def keys(api: ApiProcess) -> dict[str, str]:
    return {
        "northwind": new_key(api, "northwind"),
        "globex": new_key(api, "globex"),
        "admin": new_key(api, "ops", "--admin"),
    }


@pytest.fixture
async def http(api: ApiProcess) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=api.url, timeout=30) as client:
        yield client


async def until_status(
    http: httpx2.AsyncClient, run_id: str, key: str, wanted: set[str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = await http.get(f"/v1/runs/{run_id}", headers=bearer(key))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] in wanted:
            return body
        assert time.monotonic() < deadline, f"run {run_id} stayed {body['status']}"
        await asyncio.sleep(0.05)


async def test_a_run_is_queued_at_once_then_read_and_waited_for(
    http: httpx2.AsyncClient, keys: dict[str, str]
) -> None:
    mine = bearer(keys["northwind"])
    queued = await http.post(
        "/v1/runs", json={"agent": "writer", "prompt": "hello there"}, headers=mine
    )
    assert queued.status_code == 202, queued.text
    body = queued.json()
    assert body["status"] == "queued" and body["result"] is None
    done = await until_status(http, body["run_id"], keys["northwind"], {"succeeded"})
    assert done["result"]["content"] == "hello there"
    assert (done["tenant"], done["name"]) == ("northwind", "writer")

    waited = await http.post(
        "/v1/runs?wait=true",
        json={"agent": "reviewers", "prompt": "review this"},
        headers=bearer(keys["northwind"]),
    )
    assert waited.status_code == 200, waited.text
    team = waited.json()
    assert team["status"] == "succeeded"
    names = {m["name"] for m in team["result"]["associated_messages"]}
    assert names == {"analyst", "critic"}, team


async def test_stream_true_answers_with_the_runs_events_in_order(
    http: httpx2.AsyncClient, keys: dict[str, str], scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Reply(text="one two three four"), model="analyst")
    frames: list[Sse] = []
    async with http.stream(
        "POST",
        "/v1/runs?stream=true",
        json={"agent": "analyst", "prompt": "count"},
        headers=bearer(keys["northwind"]),
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        frames = [f async for f in read_sse(answer)]
    assert [f.id for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0].event == "run.started" and frames[-1].event == "run.done"
    text = "".join(f.data["text"] for f in frames if f.event == "text.delta")
    assert text == "one two three four" == frames[-1].data["message"]["content"]


async def test_events_resume_after_a_dropped_connection_with_no_gap_and_no_duplicate(
    http: httpx2.AsyncClient, keys: dict[str, str], scripted_model: ScriptedModelServer
) -> None:
    words = " ".join(f"w{n}" for n in range(60))
    scripted_model.script(Reply(text=words, token_delay=0.02), model="analyst")
    started = await http.post(
        "/v1/runs", json={"agent": "analyst", "prompt": "talk"}, headers=bearer(keys["northwind"])
    )
    run_id = started.json()["run_id"]
    first: list[Sse] = []
    async with http.stream(
        "GET", f"/v1/runs/{run_id}/events", headers=bearer(keys["northwind"])
    ) as answer:
        async for frame in read_sse(answer):
            first.append(frame)
            if len(first) == 8:
                break  # the connection drops mid-stream
    assert first[-1].event == "text.delta"
    resumed: list[Sse] = []
    headers = {**bearer(keys["northwind"]), "Last-Event-ID": str(first[-1].id)}
    async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as answer:
        resumed = [f async for f in read_sse(answer)]
    ids = [f.id for f in first + resumed]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate
    text = "".join(f.data["text"] for f in first + resumed if f.event == "text.delta")
    assert text == words and resumed[-1].event == "run.done"


async def test_a_running_run_is_cancelled_once(
    http: httpx2.AsyncClient, keys: dict[str, str], scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Reply(text="never", latency=30), model="analyst")
    started = await http.post(
        "/v1/runs", json={"agent": "analyst", "prompt": "wait"}, headers=bearer(keys["northwind"])
    )
    run_id = started.json()["run_id"]
    await until_status(http, run_id, keys["northwind"], {"running"})
    cancelled = await http.post(f"/v1/runs/{run_id}/cancel", headers=bearer(keys["northwind"]))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "running"
    ended = await until_status(http, run_id, keys["northwind"], {"cancelled"}, timeout=40)
    assert ended["error"]["type"] == "RunCancelled"
    again = await http.post(f"/v1/runs/{run_id}/cancel", headers=bearer(keys["northwind"]))
    assert again.status_code == 409 and "already ended (cancelled)" in again.text


async def test_a_tenant_sees_only_its_own_runs_and_a_missing_or_bad_key_is_401(
    http: httpx2.AsyncClient, keys: dict[str, str]
) -> None:
    made = await http.post(
        "/v1/runs?wait=true",
        json={"agent": "writer", "prompt": "mine"},
        headers=bearer(keys["northwind"]),
    )
    run_id = made.json()["run_id"]
    theirs = bearer(keys["globex"])
    for method, path in (
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/events"),
        ("POST", f"/v1/runs/{run_id}/cancel"),
    ):
        answer = await http.request(method, path, headers=theirs)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"] == {"type": "NotFound", "message": f"no run {run_id!r}"}
    assert (await http.get(f"/v1/runs/{run_id}", headers=bearer(keys["admin"]))).status_code == 200
    listed = await http.get("/v1/runs?limit=1000", headers=theirs)
    assert run_id not in {r["run_id"] for r in listed.json()["runs"]}
    other = await http.get("/v1/runs?tenant=northwind", headers=theirs)
    assert other.status_code == 403

    none = await http.get(f"/v1/runs/{run_id}")
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert "no API key" in none.json()["error"]["message"]
    bad = await http.get(f"/v1/runs/{run_id}", headers=bearer("cak_not-a-key"))
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "Unauthorized"


async def test_a_revoked_key_answers_401_and_no_key_is_ever_shown(
    api: ApiProcess, http: httpx2.AsyncClient
) -> None:
    key = new_key(api, "initech")
    assert (await http.get("/v1/runs", headers=bearer(key))).status_code == 200
    listed = cli("keys", "list", "--json", env=api.env)
    assert key not in listed.stdout and "initech" in listed.stdout
    assert "hash" not in listed.stdout  # not even the key's hash leaves the store
    key_id = next(k["key_id"] for k in json.loads(listed.stdout) if k["tenant"] == "initech")
    assert cli("keys", "revoke", key_id, env=api.env).stdout.strip() == f"key {key_id}: revoked"
    assert (await http.get("/v1/runs", headers=bearer(key))).status_code == 401
    again = cli("keys", "revoke", key_id, env=api.env)
    assert again.returncode == 1 and f"no live key {key_id!r}" in again.stderr
    unknown = cli("keys", "create", "--tenant", "nosuch", env=api.env)
    assert unknown.returncode == 1 and "tenant 'nosuch' is not in the manifest" in unknown.stderr


@pytest.mark.parametrize(
    ("body", "query", "status", "names"),
    [
        ({"agent": "nobody", "prompt": "x"}, "", 422, "no agent or team 'nobody'"),
        ({"agent": "writer", "prompt": ""}, "", 422, "body.prompt"),
        ({"agent": "writer", "prompt": "x", "colour": "red"}, "", 422, "body.colour"),
        ({"agent": "writer", "prompt": "x", "priority": 12}, "", 422, "body.priority"),
        ({"agent": "writer", "prompt": "x"}, "?wait=true&stream=true", 400, "ask for one"),
        ({"agent": "writer", "prompt": "x", "tenant": "globex"}, "", 403, "tenant 'northwind'"),
    ],
)
async def test_a_bad_request_is_refused_naming_what_is_wrong(
    http: httpx2.AsyncClient,
    keys: dict[str, str],
    body: dict[str, Any],
    query: str,
    status: int,
    names: str,
) -> None:
    answer = await http.post(f"/v1/runs{query}", json=body, headers=bearer(keys["northwind"]))
    assert answer.status_code == status, answer.text
    assert names in answer.json()["error"]["message"]


async def test_the_same_idempotency_key_of_one_tenant_is_one_run_and_anothers_is_not(
    http: httpx2.AsyncClient, keys: dict[str, str]
) -> None:
    body = {"agent": "writer", "prompt": "once", "idempotency_key": "nightly-1"}
    mine = bearer(keys["northwind"])
    one = (await http.post("/v1/runs?wait=true", json=body, headers=mine)).json()
    two = (await http.post("/v1/runs", json=body, headers=mine)).json()
    assert two["run_id"] == one["run_id"] and two["status"] == "succeeded"
    theirs = (await http.post("/v1/runs", json=body, headers=bearer(keys["globex"]))).json()
    assert theirs["run_id"] != one["run_id"]


async def test_the_openapi_document_names_every_route(http: httpx2.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert {
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/runs/{run_id}/cancel",
        "/v1/schedules",
        "/v1/schedules/{name}/history",
        "/v1/usage",
    } <= set(document["paths"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]


@pytest.mark.usefixtures("agents_beat")
async def test_schedules_are_listed_paused_resumed_triggered_and_their_history_read(
    http: httpx2.AsyncClient, keys: dict[str, str]
) -> None:
    entry = await Agent("api-nightly", "test:echo").run_in_background(
        "the nightly report", interval=3600, tenant="northwind"
    )
    mine, theirs = bearer(keys["northwind"]), bearer(keys["globex"])
    try:
        listed = (await http.get("/v1/schedules", headers=mine)).json()["schedules"]
        assert entry.id in {s["id"] for s in listed}
        hidden = (await http.get("/v1/schedules", headers=theirs)).json()["schedules"]
        assert entry.id not in {s["id"] for s in hidden}
        assert (await http.get("/v1/schedules/api-nightly", headers=theirs)).status_code == 404
        shown = (await http.get("/v1/schedules/api-nightly", headers=mine)).json()
        assert (shown["id"], shown["agent"], shown["every"]) == (entry.id, "api-nightly", 3600)

        deadline = time.monotonic() + 20
        while not (
            fires := (await http.get("/v1/schedules/api-nightly/history", headers=mine)).json()[
                "fires"
            ]
        ):
            assert time.monotonic() < deadline, "the first fire was never recorded"
            await asyncio.sleep(0.1)
        assert fires[0]["result"]["content"] == "the nightly report"
        assert fires[0]["schedule"] == entry.id
        for action, outcome in (
            ("pause", "paused"),
            ("resume", "active"),
            ("trigger", "fires now"),
        ):
            done = await http.post(f"/v1/schedules/api-nightly/{action}", headers=mine)
            assert done.json() == {"id": entry.id, "outcome": outcome}, done.text
        refused = await http.post("/v1/schedules/api-nightly/pause", headers=theirs)
        assert refused.status_code == 404
    finally:
        await entry.cancel()


async def test_usage_is_grouped_and_a_tenant_sees_only_its_own(
    http: httpx2.AsyncClient, keys: dict[str, str]
) -> None:
    for tenant in ("northwind", "globex"):
        made = await http.post(
            "/v1/runs?wait=true",
            json={"agent": "writer", "prompt": "count me"},
            headers=bearer(keys[tenant]),
        )
        await wait_stored(made.json()["run_id"])
    mine = (await http.get("/v1/usage?by=tenant,agent", headers=bearer(keys["northwind"]))).json()
    assert mine["by"] == ["tenant", "agent"]
    assert {r["tenant"] for r in mine["rows"]} == {"northwind"}
    every = (await http.get("/v1/usage?by=tenant", headers=bearer(keys["admin"]))).json()
    assert {"northwind", "globex"} <= {r["tenant"] for r in every["rows"]}
    bad = await http.get("/v1/usage?by=colour", headers=bearer(keys["admin"]))
    assert bad.status_code == 422 and "group by any of tenant, agent, model, day" in bad.text


async def test_an_ended_run_not_in_the_store_yet_shows_its_usage_and_cost(
    http: httpx2.AsyncClient, keys: dict[str, str], agents_store_url: str
) -> None:
    mine = bearer(keys["northwind"])
    made = await http.post(
        "/v1/runs?wait=true", json={"agent": "writer", "prompt": "count me"}, headers=mine
    )
    run_id = made.json()["run_id"]
    await wait_stored(run_id)
    await forget_stored(agents_store_url, run_id)  # its record still on the way to the store
    shown = (await http.get(f"/v1/runs/{run_id}", headers=mine)).json()
    assert (shown["status"], shown["result"]["content"]) == ("succeeded", "count me")
    usage = shown["result"]["usage"]
    assert (shown["input_tokens"], shown["output_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert shown["output_tokens"] > 0  # the console's run page shows them once the run ends


async def test_a_run_redis_has_forgotten_is_read_from_the_run_store(
    http: httpx2.AsyncClient, keys: dict[str, str], redis_client: aioredis.Redis, agents: Settings
) -> None:
    mine = bearer(keys["northwind"])
    made = await http.post(
        "/v1/runs?wait=true", json={"agent": "writer", "prompt": "keep me"}, headers=mine
    )
    run_id = made.json()["run_id"]
    await wait_stored(run_id)
    prefix = Keys(agents.key_prefix)
    await redis_client.delete(prefix.run_state(run_id), prefix.run_log(run_id))  # past result_ttl
    shown = (await http.get(f"/v1/runs/{run_id}", headers=mine)).json()
    assert (shown["status"], shown["result"]["content"], shown["prompt"]) == (
        "succeeded",
        "keep me",
        "keep me",
    )
    assert (await http.get(f"/v1/runs/{run_id}", headers=bearer(keys["globex"]))).status_code == 404
    async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=mine) as answer:
        frames = [f async for f in read_sse(answer)]
    assert [(f.id, f.event) for f in frames] == [(None, "run.done")]
    assert frames[0].data["message"]["content"] == "keep me"
