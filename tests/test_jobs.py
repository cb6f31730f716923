"""run_job, structured output and tools, on real workers with the scripted model server."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import BaseModel

from celery_agents import (
    Agent,
    Job,
    OutputValidationError,
    RunHandle,
    Team,
    TeamRun,
    UnknownToolError,
    UserError,
)
from celery_agents.config.manifest import AgentSpec
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.facade.client import get_client
from celery_agents.output import OutputSpec
from celery_agents.tasks.payload import RunPayload
from celery_agents.testing.scripted_server import Fail, Reply, ScriptedModelServer, ToolCallSpec
from tests.support.models import Finding

pytestmark = pytest.mark.usefixtures("agents")

TRIAGE = Job(
    name="triage",
    description="Triage an incident",
    prompt="Triage: {incident}",
    required_return_type=Finding,
    tools=["fetch_logs"],
)
GOOD = json.dumps({"severity": "high", "summary": "API 500s"})


def ops(**kwargs: object) -> Agent:
    return Agent("ops", "scripted:ops", "You triage.", tools=["get_metrics"], **kwargs)  # type: ignore[arg-type]


async def test_a_job_returns_a_validated_instance(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply(GOOD))
    msg = await ops().run_job(TRIAGE, values={"incident": "API 500s since 09:12"})
    assert isinstance(msg.content, Finding)
    assert msg.content == Finding(severity="high", summary="API 500s")
    body = scripted_model.requests[-1].body
    assert body["messages"][-1] == {"role": "user", "content": "Triage: API 500s since 09:12"}
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Finding"
    schema = body["response_format"]["json_schema"]  # strict: every field, nothing else
    assert schema["strict"] is True
    assert schema["schema"]["required"] == ["severity", "summary"]
    assert schema["schema"]["additionalProperties"] is False
    assert schema["schema"]["properties"]["severity"]["enum"] == ["low", "medium", "high"]


async def test_invalid_output_is_retried_once_with_the_error(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply('{"severity": "urgent", "summary": "x"}'), Reply(GOOD))
    msg = await ops().run_job(TRIAGE, values={"incident": "x"})
    assert msg.content.severity == "high"
    retry = scripted_model.requests[-1].body["messages"]
    invalid = {"role": "assistant", "content": '{"severity": "urgent", "summary": "x"}'}
    assert invalid in retry  # the model sees its answer, then what was wrong with it
    assert retry[-1]["role"] == "user"
    feedback = retry[-1]["content"]
    assert "severity" in feedback and "'low', 'medium' or 'high'" in feedback


async def test_output_still_invalid_after_the_retry_fails_with_the_raw_text(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("not json at all"), Reply('{"severity": "low", "summary": " "}'))
    with pytest.raises(
        OutputValidationError, match="does not match Finding: summary: .*blank"
    ) as info:
        await ops().run_job(TRIAGE, values={"incident": "x"})
    assert info.value.details["raw"] == '{"severity": "low", "summary": " "}'
    assert scripted_model.request_count == 2


async def test_a_retry_past_the_models_context_fails_typed_with_the_first_answer(
    scripted_model: ScriptedModelServer,
) -> None:
    """A runaway answer sent back for correction may no longer fit the context: the run ends
    as an invalid answer (with its text), not as a bare HTTP error."""
    context = "request (2301 tokens) exceeds the available context size (2048 tokens)"
    scripted_model.script(Reply("not json, and on and on"), Fail(400, message=context))
    with pytest.raises(OutputValidationError, match="exceeds the available context") as info:
        await ops().run_job(TRIAGE, values={"incident": "x"})
    assert info.value.details["raw"] == "not json, and on and on"
    assert info.value.details["output_type"] == "Finding"


async def test_a_type_the_worker_cannot_import_is_validated_by_its_schema(
    scripted_model: ScriptedModelServer,
) -> None:
    class Verdict(BaseModel):  # defined in a function: no import path, as in a notebook
        ok: bool
        reasons: list[str]

    assert OutputSpec.of(Verdict).import_path is None
    scripted_model.script(Reply('{"ok": "maybe"}'), Reply('{"ok": true, "reasons": ["fine"]}'))
    msg = await Agent("judge", "scripted:judge", output_type=Verdict).run("judge this")
    assert msg.content == Verdict(ok=True, reasons=["fine"])
    assert "reasons" in scripted_model.requests[-1].body["messages"][-1]["content"]


async def test_an_agent_output_type_applies_to_every_run(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply(f"```json\n{GOOD}\n```"))  # fenced JSON is accepted too
    msg = await ops(output_type=Finding).run("what happened?")
    assert isinstance(msg.content, Finding)


async def test_the_tool_fallback_answers_through_a_final_result_tool(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("final_result", {"severity": "low", "summary": "ok"}),))
    )
    msg = await Agent("t", "scripted_tools:m").run_job(TRIAGE, values={"incident": "x"})
    assert msg.content == Finding(severity="low", summary="ok")
    body = scripted_model.requests[-1].body
    assert "response_format" not in body
    assert body["tool_choice"] == "required"
    assert "final_result" in {t["function"]["name"] for t in body["tools"]}


async def test_a_tool_round_trip_inside_a_job(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(
        Reply(tool_calls=(ToolCallSpec("fetch_logs", {"service": "api", "minutes": 5}),)),
        Reply(GOOD),
    )
    msg = await ops().run_job(TRIAGE, values={"incident": "x"})
    assert msg.content.severity == "high"
    assert [(c.tool_name, c.result) for c in msg.tool_calls] == [
        ("fetch_logs", "api: 3 errors in the last 5 minutes")
    ]
    tool_message = scripted_model.requests[-1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["content"] == "api: 3 errors in the last 5 minutes"


async def test_a_tool_that_times_out_is_reported_to_the_model(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply(tool_calls=(ToolCallSpec("sleepy", {}),)), Reply("gave up waiting"))
    msg = await Agent("a", "scripted:m", tools=["sleepy"]).run("x")
    assert msg.content == "gave up waiting"
    assert msg.tool_calls[0].error == "Timed out after 0.2 seconds."  # pydantic-ai's wording


@pytest.mark.parametrize(
    ("include", "offered"), [(True, {"get_metrics", "fetch_logs"}), (False, {"fetch_logs"})]
)
async def test_include_agent_tools_both_ways(
    scripted_model: ScriptedModelServer, include: bool, offered: set[str]
) -> None:
    scripted_model.script(Reply(GOOD))
    await ops().run_job(TRIAGE, values={"incident": "x"}, include_agent_tools=include)
    tools = scripted_model.requests[-1].body["tools"]
    assert {t["function"]["name"] for t in tools} == offered


async def test_a_team_job_validates_every_members_answer(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply(GOOD), model="a")
    scripted_model.script(Reply('{"severity": "low", "summary": "fine"}'), model="b")
    team = Team([Agent("a", "scripted:a"), Agent("b", "scripted:b")], name="pair")
    msg = await team.run_job(TRIAGE, values={"incident": "x"})
    assert [f.severity for f in msg.content] == ["high", "low"]
    assert all(isinstance(m.content, Finding) for m in msg.associated_messages)


async def test_a_chain_job_enters_the_first_stage_and_types_the_last(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("notes on the incident"), model="first")
    scripted_model.script(Reply(GOOD), model="last")
    chain = TeamRun([Agent("first", "scripted:first"), Agent("last", "scripted:last")])
    msg = await chain.run_job(TRIAGE, values={"incident": "disk full"})
    assert isinstance(msg.content, Finding) and msg.name == "last"
    first, last = scripted_model.requests
    assert first.body["messages"][-1]["content"] == "Triage: disk full"
    assert "response_format" not in first.body
    assert last.body["messages"][-1]["content"] == "notes on the incident"
    assert last.body["response_format"]["json_schema"]["name"] == "Finding"


async def test_run_job_stores_history_like_run(scripted_model: ScriptedModelServer) -> None:
    scripted_model.script(Reply(GOOD))
    agent = ops()
    await agent.run_job(TRIAGE, values={"incident": "x"})
    history = await agent.get_history()
    assert [m.role for m in history] == ["user", "assistant"]
    assert history[1].content == {"severity": "high", "summary": "API 500s"}


async def test_a_crafted_message_naming_an_import_path_is_refused_and_logged(
    scripted_model: ScriptedModelServer,
    agents_worker: WorkerProcess,
) -> None:
    payload = RunPayload(
        run_id=uuid.uuid4().hex,
        agent=AgentSpec(name="evil", model="scripted:m", tools=["os.system"]),
        prompt="x",
        conversation_id="c",
        timeout=10,
    )
    get_client().send(payload)
    with pytest.raises(UnknownToolError, match="'os.system' are not registered on this worker"):
        await RunHandle.attach(payload.run_id).result(timeout=20)
    assert f"refused run run_id={payload.run_id}" in agents_worker.log_path.read_text()
    assert scripted_model.request_count == 0


async def test_jobs_the_model_cannot_do_fail_before_queueing(
    scripted_model: ScriptedModelServer,
) -> None:
    agent = Agent("eyes", "blind:small")
    with pytest.raises(UserError, match="requires vision, but blind:small is marked without it"):
        await agent.run_job(Job(name="look", prompt="describe the image", requires_vision=True))
    with pytest.raises(UserError, match="needs 100000 context tokens, but blind:small has 2048"):
        await agent.run_job(Job(name="long", prompt="x", min_context_tokens=100_000))
    with pytest.raises(UserError, match="needs values for: incident"):
        await agent.run_job(TRIAGE)
    assert scripted_model.request_count == 0


def test_a_job_round_trips_through_json() -> None:
    again = Job.model_validate_json(TRIAGE.model_dump_json())
    assert isinstance(again.required_return_type, OutputSpec)
    assert again.output_spec() == TRIAGE.output_spec()
    assert again.output_spec() is not None
    assert again.output_spec().import_path == "tests.support.models:Finding"  # type: ignore[union-attr]
    assert (again.name, again.tools, again.prompt) == (
        "triage",
        ["fetch_logs"],
        "Triage: {incident}",
    )


class Colour(BaseModel):
    name: str


@pytest.mark.local_model
async def test_the_local_model_answers_with_json_that_validates_or_fails_cleanly() -> None:
    job = Job(name="colour", prompt="Name one colour. Answer in JSON.", required_return_type=Colour)
    agent = Agent("local", "local:smollm2", model_settings={"max_tokens": 40})
    try:
        msg = await agent.run_job(job, timeout=120)
    except OutputValidationError as exc:
        assert exc.details["output_type"] == "Colour"  # noqa: PT017 (either outcome is fine)
    else:
        assert isinstance(msg.content, Colour) and msg.content.name.strip()


@pytest.mark.parametrize(
    ("prompt", "values", "rendered"),
    [
        ("Return {{severity}} as JSON", {}, "Return {severity} as JSON"),  # no placeholder
        ("Return {{severity}} for {incident}", {"incident": "x"}, "Return {severity} for x"),
        ("Triage {incident[0]}", {"incident": ["first"]}, "Triage first"),
    ],
)
def test_a_job_prompt_is_one_template_whatever_its_placeholders(
    prompt: str, values: dict[str, object], rendered: str
) -> None:
    assert Job(name="j", prompt=prompt).render(values) == rendered


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ('Answer like {"severity": "high"}', 'needs values for: "severity" .*literal brace'),
        ("Use { carefully", "cannot be filled: .*literal brace"),
        ("{} and {x}", "needs values for: {}, x"),
        ("About {incident.title}", "needs values for: incident$"),
    ],
)
def test_a_job_prompt_that_cannot_be_filled_is_a_user_error_naming_why(
    prompt: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        Job(name="j", prompt=prompt).render({})


@pytest.mark.parametrize(
    "answer",
    [
        GOOD,
        f"```JSON\n{GOOD}\n```",  # any case
        f"Here is the triage:\n```json\n{GOOD}\n```\nAnything else?",  # a word around it
        f"```\n{GOOD}```",
    ],
)
def test_the_answers_json_is_found_as_models_write_it(answer: str) -> None:
    assert OutputSpec.of(Finding).validate_text(answer) == json.loads(GOOD)


def test_an_answer_with_no_json_is_named_as_such() -> None:
    with pytest.raises(OutputValidationError, match="the answer is not JSON"):
        OutputSpec.of(Finding).validate_text("I would say it is high, mostly.")
