"""ScriptedModelServer, exercised through the real ``openai`` client over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from celery_agents.testing.scripted_server import (
    Disconnect,
    Echo,
    Fail,
    Hang,
    Malformed,
    Reply,
    ScriptedModelServer,
    ToolCallSpec,
)

MESSAGES: list[Any] = [{"role": "user", "content": "hello scripted world"}]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_server(server: ScriptedModelServer) -> None:
    server.reset()


@pytest.fixture
def client(server: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as c:
        yield c


def _raw_request(
    server: ScriptedModelServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ echo


def test_echo_non_stream(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello scripted world"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 3)
    assert completion.usage.total_tokens == 6


def test_echo_stream_joins_to_exact_text_with_usage(client: openai.OpenAI) -> None:
    text = "  leading spaces,\tand\n  odd   whitespace kept "
    stream = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces)


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_echo_uses_last_user_message_and_joins_text_parts(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
        },
    ]
    completion = client.chat.completions.create(model="m", messages=messages)

    assert completion.choices[0].message.content == "part one part two"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 10


# ---------------------------------------------------------------------------------- scripting


def test_scripted_steps_are_consumed_in_order_then_echo(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(Reply("first", usage=(11, 7)), Reply("second"), Echo())

    answers = [client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(4)]

    assert [a.choices[0].message.content for a in answers] == [
        "first",
        "second",
        "hello scripted world",
        "hello scripted world",
    ]
    assert answers[0].usage is not None
    assert (answers[0].usage.prompt_tokens, answers[0].usage.completion_tokens) == (11, 7)


def test_per_model_queues_fall_back_to_global_then_echo(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(Reply("for a"), model="model-a")
    server.script(Reply("global"))

    def ask(model: str) -> str | None:
        completion = client.chat.completions.create(model=model, messages=MESSAGES)
        return completion.choices[0].message.content

    assert ask("model-b") == "global"
    assert ask("model-a") == "for a"
    assert ask("model-a") == "hello scripted world"


def test_tool_calls_non_stream(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(
        Reply(
            tool_calls=(
                ToolCallSpec("get_weather", {"city": "Paris", "days": 3}),
                ToolCallSpec("broken", '{"city": "Par', id="call_fixed"),
            )
        )
    )
    completion = client.chat.completions.create(model="m", messages=MESSAGES)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 2
    first, second = calls
    assert isinstance(first, ChatCompletionMessageFunctionToolCall)
    assert isinstance(second, ChatCompletionMessageFunctionToolCall)
    assert first.type == "function"
    assert first.id.startswith("call_")
    assert first.function.name == "get_weather"
    assert json.loads(first.function.arguments) == {"city": "Paris", "days": 3}
    assert second.id == "call_fixed"
    assert second.function.arguments == '{"city": "Par'


def test_tool_calls_stream_assemble(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(
        Reply(
            "Let me check.",
            tool_calls=(
                ToolCallSpec("get_weather", {"city": "Paris"}),
                ToolCallSpec("lookup", {"query": "celery", "limit": 5}),
            ),
        )
    )
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    assembled: dict[int, dict[str, Any]] = {}
    argument_pieces: dict[int, int] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = assembled.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
                argument_pieces[delta.index] = argument_pieces.get(delta.index, 0) + 1
    assert [assembled[i]["name"] for i in sorted(assembled)] == ["get_weather", "lookup"]
    assert json.loads(assembled[0]["arguments"]) == {"city": "Paris"}
    assert json.loads(assembled[1]["arguments"]) == {"query": "celery", "limit": 5}
    assert all(call["id"] for call in assembled.values())
    assert all(count >= 2 for count in argument_pieces.values())
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------------------------ failures


def test_rate_limit_with_retry_after(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(Fail(429, retry_after=0.1, message="slow down"))

    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)

    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "0.1"
    assert "slow down" in str(info.value)
    assert info.value.code == "rate_limit_exceeded"


def test_server_error(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(Fail(500, message="boom"), Fail(503, retry_after=2))

    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 500
    assert "boom" in str(info.value)

    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "2"


def test_hang_times_out_client_without_blocking_others(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(Hang(5))
    started = time.monotonic()

    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="m", messages=MESSAGES)

    assert time.monotonic() - started < 2
    # the hung request is still sleeping on the server; a new one must be answered anyway
    completion = client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "hello scripted world"


def test_malformed_body_raises(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(Malformed())

    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_malformed_sse_raises_after_first_chunk(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(Malformed("sse"))
    received: list[str | None] = []

    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(json.JSONDecodeError):  # noqa: PT012 - the error comes mid-iteration
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    stream.close()

    assert received == ["partial"]


def test_disconnect_mid_stream(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(Disconnect(after_chunks=2))
    received = []

    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):  # noqa: PT012 - the error comes mid-iteration
        for chunk in stream:
            received.append(chunk)
    stream.close()

    assert len(received) == 2
    assert received[0].choices[0].delta.role == "assistant"
    assert received[1].choices[0].delta.content == "hello "


def test_disconnect_non_stream(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.script(Disconnect())

    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MESSAGES)

    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content


# --------------------------------------------------------------------------------- concurrency


def test_fifty_concurrent_async_streams(server: ScriptedModelServer) -> None:
    server.token_delay = 0.005

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=server.url, api_key="test", max_retries=0
        ) as aclient:

            async def one(i: int) -> str:
                stream = await aclient.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": f"message number {i} here"}],
                    stream=True,
                )
                parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
                return "".join(parts)

            return await asyncio.gather(*(one(i) for i in range(50)))

    texts = asyncio.run(run())

    assert texts == [f"message number {i} here" for i in range(50)]
    assert server.request_count == 50


def test_hundreds_of_simultaneous_connections(server: ScriptedModelServer) -> None:
    async def run() -> list[bytes]:
        connections = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", server.port) for _ in range(300))
        )
        try:
            for _, writer in connections:
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")

            async def read(reader: asyncio.StreamReader) -> bytes:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                return await reader.readexactly(length)

            return await asyncio.gather(*(read(reader) for reader, _ in connections))
        finally:
            for _, writer in connections:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in connections))

    bodies = asyncio.run(run())

    assert all(json.loads(body) == {"status": "ok"} for body in bodies)
    assert server.request_count == 300


# ------------------------------------------------------------------------------ bookkeeping


def test_wait_for_requests(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    answers: list[str | None] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        )
    )
    worker.start()
    recorded = server.wait_for_requests(1, timeout=5)
    worker.join(timeout=5)

    assert recorded[0].path == "/v1/chat/completions"
    assert answers == ["hello scripted world"]
    with pytest.raises(TimeoutError):
        server.wait_for_requests(2, timeout=0.05)


def test_recorded_request_details_and_redaction(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    list(client.chat.completions.create(model="rec-model", messages=MESSAGES, stream=True))

    (recorded,) = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "<redacted>"
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.model == "rec-model"
    assert recorded.stream is True
    assert recorded.body["messages"] == MESSAGES
    assert recorded.received_at <= time.monotonic()


def test_reset_clears_queues_requests_and_timings(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    server.script(Reply("queued"))
    server.script(Reply("queued for x"), model="x")
    server.latency = 3.0
    server.token_delay = 3.0
    _raw_request(server, "GET", "/health")
    assert server.request_count == 1

    server.reset()

    assert server.request_count == 0
    assert server.requests == []
    assert (server.latency, server.token_delay) == (0.0, 0.0)
    for model in ("m", "x"):
        completion = client.chat.completions.create(model=model, messages=MESSAGES)
        assert completion.choices[0].message.content == "hello scripted world"


def test_latency_before_first_byte(server: ScriptedModelServer, client: openai.OpenAI) -> None:
    server.latency = 0.2
    server.script(Reply("fast", latency=0.0))

    started = time.monotonic()
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    fast = time.monotonic() - started
    started = time.monotonic()
    client.chat.completions.create(model="m", messages=MESSAGES)
    slow = time.monotonic() - started

    assert fast < 0.2 <= slow


# ------------------------------------------------------------------------------- other routes


def test_models_lists_scripted_and_seen_models(
    server: ScriptedModelServer, client: openai.OpenAI
) -> None:
    client.chat.completions.create(model="model-x", messages=MESSAGES)

    ids = [model.id for model in client.models.list()]

    assert ids == ["scripted", "model-x"]


def test_health_not_found_bad_json_and_chunked_body(server: ScriptedModelServer) -> None:
    status, headers, body = _raw_request(server, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["content-type"] == "application/json"

    status, _, body = _raw_request(server, "GET", "/v1/nope")
    assert status == 404
    assert "message" in json.loads(body)["error"]

    status, _, body = _raw_request(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        payload = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        conn.request("POST", "/v1/chat/completions", body=iter([payload]), encode_chunked=True)
        first = json.loads(conn.getresponse().read())
        # the same keep-alive connection serves a second request
        conn.request("GET", "/health")
        second = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert first["choices"][0]["message"]["content"] == "hello scripted world"
    assert second == {"status": "ok"}


# --------------------------------------------------------------------------------- lifecycle


def test_lifecycle_is_idempotent_and_stop_cuts_hangs_short() -> None:
    local = ScriptedModelServer()
    with pytest.raises(RuntimeError):
        _ = local.port
    assert local.start() is local.start()
    assert local.url == f"http://127.0.0.1:{local.port}/v1"
    local.script(Hang(30))

    with socket.create_connection(("127.0.0.1", local.port), timeout=5) as sock:
        body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        local.wait_for_requests(1, timeout=5)
        started = time.monotonic()
        local.stop()
        stopped_in = time.monotonic() - started
        leftover = sock.recv(1024)

    assert stopped_in < 1.0
    assert leftover == b""
    local.stop()


def test_command_line_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "celery_agents.testing.scripted_server", "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env
    ) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        try:
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/v1")
            with openai.OpenAI(base_url=url, api_key="test", max_retries=0) as cli_client:
                completion = cli_client.chat.completions.create(model="m", messages=MESSAGES)
            assert completion.choices[0].message.content == "hello scripted world"
        finally:
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=10)
    assert returncode == 0
