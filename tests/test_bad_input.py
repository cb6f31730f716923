"""Bad input gets a clear error naming what is wrong, never a hang."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from celery_agents import (
    Agent,
    AgentsManifest,
    ConfigError,
    ModelError,
    RunHandle,
    RunTimeout,
    UnknownAgentError,
    UnknownProviderError,
    UnknownToolError,
    UserError,
)
from celery_agents.config.manifest import AgentSpec
from celery_agents.errors import InvalidPayloadError, ToolError
from celery_agents.facade.client import get_client
from celery_agents.tasks.payload import RunPayload
from celery_agents.testing.scripted_server import (
    Disconnect,
    Fail,
    Hang,
    Malformed,
    Reply,
    ScriptedModelServer,
    ToolCallSpec,
)

pytestmark = pytest.mark.usefixtures("agents")


def scripted(**kwargs: object) -> Agent:
    return Agent("analyst", "scripted:model", **kwargs)  # type: ignore[arg-type]


async def test_unknown_provider_is_refused_before_queueing(
    scripted_model: ScriptedModelServer,
) -> None:
    with pytest.raises(
        UnknownProviderError,
        match=r"unknown provider .nope. in model .nope:model. \(known: [a-z_, ]*scripted",
    ):
        await Agent("a", "nope:model").run("x")
    with pytest.raises(UnknownProviderError, match="'nope'"):
        await scripted().run("x", model="nope:m")
    with pytest.raises(UnknownProviderError, match=r"did you mean 'openai:gpt-4o'\?"):
        await Agent("a", "opnai:gpt-4o").run("x")
    with pytest.raises(UserError, match=r"'gpt-4o' has no provider: did you mean 'openai:gpt-4o'"):
        await scripted().run("x", model="gpt-4o")
    assert scripted_model.request_count == 0


async def test_unknown_tool_is_refused_before_queueing(scripted_model: ScriptedModelServer) -> None:
    with pytest.raises(UnknownToolError, match="unknown tool.*no_such_tool"):
        await scripted(tools=["add", "no_such_tool"]).run("x")
    assert scripted_model.request_count == 0


def test_unknown_agent_in_the_manifest_names_the_known_ones() -> None:
    manifest = AgentsManifest.from_text("agents: {a1: {model: 'test:echo'}}", source="m.yaml")
    with pytest.raises(UnknownAgentError, match="unknown agent 'zz' in m.yaml.*known: a1"):
        Agent.from_manifest(manifest, "zz")
    assert Agent.from_manifest(manifest, "a1").model == "test:echo"


@pytest.mark.parametrize("prompts", [("",), ("   ",), ()])
async def test_an_empty_prompt_is_refused(prompts: tuple[str, ...]) -> None:
    with pytest.raises(UserError, match="prompt"):
        await scripted().run(*prompts)


def test_bad_agent_definitions_name_the_field() -> None:
    with pytest.raises(UserError, match="model_settings.temprature"):
        Agent("a", "test:echo", model_settings={"temprature": 0})
    with pytest.raises(UserError, match="provider:name"):
        Agent("a", ":x")


async def test_model_429_then_success_is_retried(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Fail(429, retry_after=0.05), Reply("after the retry"))
    msg = await scripted().run("x")
    assert msg.content == "after the retry"
    assert scripted_model.request_count == 2


async def test_model_500_forever_gives_a_clear_model_error_within_the_retry_budget(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(*[Fail(500, message="backend exploded")] * 10)
    with pytest.raises(ModelError, match=r"HTTP 500: backend exploded") as info:
        await scripted().run("x", timeout=30)
    assert info.value.details["attempts"] == 4  # CELERY_AGENTS_MODEL_MAX_RETRIES=3 in tests
    assert scripted_model.request_count == 4


async def test_a_client_error_is_not_retried(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Fail(400, message="bad request field"))
    with pytest.raises(ModelError, match="HTTP 400: bad request field"):
        await scripted().run("x")
    assert scripted_model.request_count == 1


@pytest.mark.parametrize("step", [Malformed("sse"), Disconnect(after_chunks=2)])
async def test_a_broken_model_stream_is_a_model_error(
    scripted_model: ScriptedModelServer, step: Malformed | Disconnect
) -> None:
    scripted_model.script(step)
    with pytest.raises(ModelError, match="scripted:model"):
        await scripted().run("x", timeout=30)


async def test_a_model_slower_than_the_run_timeout_times_out(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Hang(10))
    with pytest.raises(RunTimeout, match="timed out after 0.5s"):
        await scripted().run("x", timeout=0.5)


async def test_tool_calls_that_keep_failing_end_the_run(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(*[Reply(tool_calls=(ToolCallSpec("add", '{"a": "not json'),))] * 5)
    with pytest.raises(ToolError, match="'add' failed 3 times in a row: arguments: Invalid JSON"):
        await scripted(tools=["add"]).run("x")


async def test_the_worker_refuses_a_message_naming_an_unregistered_tool(
    scripted_model: ScriptedModelServer,
) -> None:
    payload = RunPayload(
        run_id=uuid.uuid4().hex,
        agent=AgentSpec(name="sneaky", model="scripted:model", tools=["rm_rf"]),
        prompt="x",
        conversation_id="c",
        timeout=10,
    )
    get_client().send(payload)  # bypasses the client's own check, as a hostile sender would
    with pytest.raises(UnknownToolError, match="'rm_rf' are not registered on this worker"):
        await RunHandle.attach(payload.run_id).result(timeout=20)
    assert scripted_model.request_count == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"run_id": "r", "prompt": "x"}, "agent: Field required"),
        (
            {"agent": {"model": "test:echo"}, "prompt": "", "conversation_id": "c", "timeout": 1},
            "prompt: String should have at least 1 character",
        ),
        ("not a dict", "payload"),
    ],
)
async def test_the_worker_refuses_a_malformed_payload(payload: object, field: str) -> None:
    run_id = uuid.uuid4().hex
    if isinstance(payload, dict):
        payload = {**payload, "run_id": run_id}
    client = get_client()
    client.app.send_task("celery_agents.run_agent", kwargs={"payload": payload}, task_id=run_id)
    with pytest.raises(InvalidPayloadError, match=field):
        await RunHandle.attach(run_id).result(timeout=20)


def test_a_malformed_manifest_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("agents:\n  a: {model: 'test:echo'}\n   b: oops\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 3, column \d+: invalid YAML"):
        AgentsManifest.from_yaml(path)


def test_a_name_given_twice_in_the_manifest_is_refused_with_its_line() -> None:
    twice = "agents:\n  analyst: {model: 'test:echo'}\n  analyst: {model: 'test:fail'}\n"
    with pytest.raises(ConfigError, match=r"m.yaml: line 3, column 3: .*duplicate key 'analyst'"):
        AgentsManifest.from_text(twice, source="m.yaml")
    merged = "x: &base {model: 'test:echo'}\nagents:\n  a: {<<: *base, model: 'test:fail'}\n"
    with pytest.raises(ConfigError, match="x: Extra inputs"):  # a merge key may be overridden
        AgentsManifest.from_text(merged, source="m.yaml")


def test_a_bad_manifest_field_names_the_file_and_the_field() -> None:
    with pytest.raises(ConfigError, match=r"m.yaml: agents.analyst.model: Field required"):
        AgentsManifest.from_text("agents: {analyst: {system_prompt: hi}}", source="m.yaml")
    with pytest.raises(ConfigError, match=r"agents.a.model: unknown provider 'vlm'.*'vllm:qwen'"):
        AgentsManifest.from_text("agents: {a: {model: 'vlm:qwen'}}", source="m.yaml")
    with pytest.raises(ConfigError, match=r"providers.p.base_ur: Extra inputs are not permitted"):
        AgentsManifest.from_text("providers: {p: {base_ur: x}}", source="m.yaml")
    with pytest.raises(ConfigError, match=r"teams.t.members: unknown agent or team 'ghost'"):
        AgentsManifest.from_text("teams: {t: {members: [ghost]}}", source="m.yaml")


def test_an_unknown_provider_is_named_by_its_path_alone() -> None:
    with pytest.raises(ConfigError) as info:
        AgentsManifest.from_text("agents: {a: {model: 'vlm:qwen'}}", source="m.yaml")
    assert info.value.message == (
        "m.yaml: agents.a.model: unknown provider 'vlm' in model 'vlm:qwen': "
        "did you mean 'vllm:qwen'?"
    )


def test_an_agent_and_a_team_of_the_same_name_are_refused_naming_both() -> None:
    text = (
        "agents: {analyst: {model: 'test:echo'}, critic: {model: 'test:echo'}}\n"
        "teams: {analyst: {members: [critic]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        AgentsManifest.from_text(text, source="m.yaml")
    assert info.value.message.startswith("m.yaml: agents.analyst and teams.analyst: ")


def test_a_missing_manifest_file_is_named() -> None:
    with pytest.raises(ConfigError, match="nowhere.yaml: cannot read manifest"):
        AgentsManifest.from_yaml("/nowhere.yaml")


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ("{s: {agent: ghost, prompt: x, every: 1}}", "schedules.s.agent: unknown agent 'ghost'"),
        ("{s: {team: ghost, prompt: x, every: 1}}", "schedules.s.team: unknown team 'ghost'"),
        ("{s: {agent: a, prompt: x}}", "schedules.s: give exactly one of 'every' or 'cron'"),
        ("{s: {agent: a, prompt: x, cron: '0 25 * * *'}}", "schedules.s: cron '0 25 \\* \\* \\*'"),
        ("{s: {agent: a, prompt: x, cron: '0 2 * * *', timezone: Mars/Base}}", "Mars/Base"),
        ("{s: {agent: a, prompt: '', every: 1}}", "schedules.s.prompt: String should have at"),
    ],
)
def test_bad_schedules_name_the_field(schedules: str, message: str) -> None:
    text = f"agents: {{a: {{model: 'test:echo'}}}}\nschedules: {schedules}\n"
    with pytest.raises(ConfigError, match=message):
        AgentsManifest.from_text(text, source="m.yaml")
