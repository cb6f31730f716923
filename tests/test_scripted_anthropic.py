"""The scripted server's Anthropic Messages API, driven by the real ``anthropic`` SDK and by
pydantic-ai's ``AnthropicModel``, over real loopback HTTP, with the same scripts as OpenAI's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, ToolOutput
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider

from celery_agents.testing.scripted_server import (
    Disconnect,
    Fail,
    Malformed,
    Reply,
    ScriptedModelServer,
    ToolCallSpec,
)

KEY = "sk-ant-scripted-0123456789abcdef"
PROMPT: list[Any] = [{"role": "user", "content": "hello scripted world"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(api_key=KEY) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_server(server: ScriptedModelServer) -> None:
    server.reset()


@pytest.fixture
def client(server: ScriptedModelServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.anthropic_url, api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def claude(server: ScriptedModelServer) -> AsyncIterator[AnthropicModel]:
    """pydantic-ai's Anthropic model pointed at the server; leaving closes its HTTP client."""
    provider = AnthropicProvider(base_url=server.anthropic_url, api_key=KEY)
    async with AnthropicModel("claude-scripted", provider=provider) as model:
        yield model


def create(client: anthropic.Anthropic, **options: Any) -> anthropic.types.Message:
    return client.messages.create(
        model="claude-scripted", max_tokens=64, messages=PROMPT, **options
    )


# ------------------------------------------------------------------------------ the SDK


def test_a_message_echoes_the_last_user_text_as_one_text_block_with_usage(
    client: anthropic.Anthropic,
) -> None:
    message = create(client, system="be brief")

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-scripted"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert isinstance(message.content[0], anthropic.types.TextBlock)
    assert message.content[0].text == "hello scripted world"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 3)


def test_a_stream_sends_the_messages_api_events_in_order_and_joins_to_the_text(
    client: anthropic.Anthropic,
) -> None:
    text = "  spaced\tand\n  odd   whitespace kept "
    messages: list[Any] = [{"role": "user", "content": text}]

    with client.messages.create(
        model="claude-scripted", max_tokens=64, messages=messages, stream=True
    ) as stream:
        events = list(stream)

    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    ]
    assert len(deltas) > 1
    assert "".join(deltas) == text
    final = events[-2]
    assert final.type == "message_delta"
    assert final.delta.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(deltas)


def test_scripted_tool_calls_arrive_as_tool_use_blocks_plain_and_streamed(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    calls = (ToolCallSpec("get_weather", {"city": "Paris", "days": 3}), ToolCallSpec("noop", {}))
    server.script(Reply("Let me check.", tool_calls=calls), Reply("Again.", tool_calls=calls))

    plain = create(client)
    with client.messages.stream(model="claude-scripted", max_tokens=64, messages=PROMPT) as s:
        streamed = s.get_final_message()

    for message, text in ((plain, "Let me check."), (streamed, "Again.")):
        assert message.stop_reason == "tool_use"
        first, *uses = message.content
        assert isinstance(first, anthropic.types.TextBlock)
        assert first.text == text
        assert [
            (use.name, use.input, use.id.startswith("toolu_"))
            for use in uses
            if isinstance(use, anthropic.types.ToolUseBlock)
        ] == [("get_weather", {"city": "Paris", "days": 3}, True), ("noop", {}, True)]


def test_one_script_serves_both_apis_in_arrival_order_and_per_model(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    server.script(Reply("first"), Reply("second"))
    server.script(Reply("for claude"), model="claude-scripted")

    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as chat:
        first = chat.chat.completions.create(model="gpt-scripted", messages=PROMPT)
        claude_only = create(client)
        second = client.messages.create(model="other", max_tokens=64, messages=PROMPT)

    assert first.choices[0].message.content == "first"
    assert [
        block.text
        for message in (claude_only, second)
        for block in message.content
        if isinstance(block, anthropic.types.TextBlock)
    ] == ["for claude", "second"]
    assert [r.path for r in server.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages",
    ]


def test_failures_carry_anthropic_error_types_and_retry_after(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    server.script(Fail(429, retry_after=0.5, message="slow down"), Fail(529), Fail(500))

    with pytest.raises(anthropic.RateLimitError) as limited:
        create(client)
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        create(client)
    with pytest.raises(anthropic.InternalServerError) as crashed:
        create(client)

    assert limited.value.response.headers["retry-after"] == "0.5"
    assert limited.value.type == "rate_limit_error"
    assert limited.value.api_message == "slow down"
    assert overloaded.value.type == "overloaded_error"
    assert crashed.value.type == "api_error"


def test_an_error_event_mid_stream_raises_after_the_partial_text(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    server.script(Malformed("error"))
    received: list[str] = []

    with (  # noqa: PT012 - the error comes mid-iteration
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model="claude-scripted", max_tokens=64, messages=PROMPT) as s,
    ):
        for text in s.text_stream:
            received.append(text)

    assert received == ["partial"]
    assert "overloaded_error" in str(info.value)


def test_a_dropped_stream_fails_the_read_after_what_was_sent(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    server.script(Disconnect(after_chunks=4))
    received: list[str] = []

    # Once a stream has begun, the SDK hands its transport's error on as it is (older
    # releases) or as its own APIConnectionError over it (newer ones).
    with (  # noqa: PT012 - the error comes mid-iteration
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)),
        client.messages.stream(model="claude-scripted", max_tokens=64, messages=PROMPT) as s,
    ):
        for text in s.text_stream:
            received.append(text)

    assert received == ["hello "]


def test_messages_without_the_key_or_with_another_are_refused(
    server: ScriptedModelServer,
) -> None:
    body = {"model": "m", "max_tokens": 8, "messages": PROMPT}

    anonymous = httpx2.post(f"{server.anthropic_url}/v1/messages", json=body)
    wrong_claude = anthropic.Anthropic(
        base_url=server.anthropic_url, api_key="sk-wrong", max_retries=0
    )
    wrong_chat = openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0)
    with wrong_claude, pytest.raises(anthropic.AuthenticationError) as wrong:
        create(wrong_claude)
    with wrong_chat, pytest.raises(openai.AuthenticationError):
        wrong_chat.chat.completions.create(model="m", messages=PROMPT)

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    assert wrong.value.type == "authentication_error"


def test_recorded_requests_never_hold_the_key_whichever_header_carries_it(
    server: ScriptedModelServer, client: anthropic.Anthropic
) -> None:
    create(client)  # this SDK sends the key as "authorization: Bearer"
    with anthropic.Anthropic(
        base_url=server.anthropic_url, default_headers={"x-api-key": KEY}, max_retries=0
    ) as by_header:
        create(by_header)

    first, second = server.requests
    assert first.headers["authorization"] == "<redacted>"
    assert second.headers["x-api-key"] == "<redacted>"
    for recorded in server.requests:
        assert KEY not in json.dumps(asdict(recorded))
        assert KEY[8:] not in repr(recorded)


# --------------------------------------------------------------------------- pydantic-ai


async def test_pydantic_ai_anthropic_model_answers_a_plain_run(
    server: ScriptedModelServer, claude: AnthropicModel
) -> None:
    server.script(Reply("a plain answer", usage=(12, 3)))

    result = await Agent(claude, instructions="Be brief.").run("say something")

    assert result.output == "a plain answer"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 3)
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.body["model"] == "claude-scripted"
    assert request.body["stream"] is False
    assert "Be brief." in json.dumps(request.body["system"])


async def test_pydantic_ai_anthropic_model_streams_text_deltas(
    server: ScriptedModelServer, claude: AnthropicModel
) -> None:
    text = "streamed in several small pieces"
    server.script(Reply(text), Reply(text))
    agent = Agent(claude)

    # Without debouncing every text_delta event is one delta; by default, deltas that arrive
    # within 0.1 s of each other are grouped (here: all of them).
    async with agent.run_stream("stream please") as run:
        deltas = [delta async for delta in run.stream_text(delta=True, debounce_by=None)]
    async with agent.run_stream("stream please") as run:
        grouped = [delta async for delta in run.stream_text(delta=True)]

    assert deltas == ["streamed ", "in ", "several ", "small ", "pieces"]
    assert "".join(grouped) == text
    assert all(request.stream for request in server.requests)


async def test_pydantic_ai_anthropic_model_calls_a_tool_and_answers_with_its_result(
    server: ScriptedModelServer, claude: AnthropicModel
) -> None:
    agent = Agent(claude)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    server.script(Reply(tool_calls=(ToolCallSpec("add", {"a": 2, "b": 3}),)), Reply("It is 5."))

    result = await agent.run("what is 2 + 3?")

    assert result.output == "It is 5."
    calls = [
        part
        for message in result.all_messages()
        if isinstance(message, ModelResponse)
        for part in message.parts
        if isinstance(part, ToolCallPart)
    ]
    assert [(call.tool_name, call.args_as_dict()) for call in calls] == [("add", {"a": 2, "b": 3})]
    first, second = (r.body for r in server.requests)
    assert [tool["name"] for tool in first["tools"]] == ["add"]
    assert first["tools"][0]["input_schema"]["required"] == ["a", "b"]
    returned = second["messages"][-1]
    assert returned["role"] == "user"
    assert returned["content"][0]["type"] == "tool_result"
    assert returned["content"][0]["tool_use_id"] == calls[0].tool_call_id
    assert "5" in json.dumps(returned["content"][0]["content"])


class City(BaseModel):
    name: str
    population: int


async def test_pydantic_ai_anthropic_model_returns_structured_output_through_a_tool(
    server: ScriptedModelServer, claude: AnthropicModel
) -> None:
    server.script(
        Reply(tool_calls=(ToolCallSpec("final_result", {"name": "Paris", "population": 2}),))
    )

    result = await Agent(claude, output_type=ToolOutput(City)).run("a city")

    assert result.output == City(name="Paris", population=2)
    (request,) = server.requests
    assert [tool["name"] for tool in request.body["tools"]] == ["final_result"]
    assert request.body["tool_choice"]["type"] == "any"
