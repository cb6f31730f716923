"""``OpenAIModel`` over a real HTTP server: what it sends, what it assembles, how it fails.

The worker's model calls skip the SDK's request layer (``llm/chat_http.py``); these tests hold
that path to what the SDK did: the provider's URL, key and headers, ``extra_body`` at the top
level, streamed text, tool calls and usage, and errors that name the status and the message.
"""

from __future__ import annotations

import fcntl
import json
import resource
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import openai
import pytest

from celery_agents import Settings
from celery_agents.config.manifest import AgentsManifest, ModelSettings
from celery_agents.errors import ConfigError, ModelError, UnknownProviderError
from celery_agents.llm.base import Model, ModelRequest, ModelResponse
from celery_agents.llm.chat_http import ChatEndpoint
from celery_agents.llm.http_backend import _readable_now, use_asyncio_network
from celery_agents.llm.openai_model import RetryPolicy
from celery_agents.llm.providers import ModelFactory
from celery_agents.testing.scripted_server import (
    Fail,
    Hang,
    Malformed,
    Reply,
    ScriptedModelServer,
    ToolCallSpec,
)
from tests.test_redis_auth_tls import make_certificates

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def models(
    scripted_model: ScriptedModelServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModelFactory]:
    monkeypatch.setenv("HTTP_TEST_KEY", KEY)
    manifest = AgentsManifest.model_validate(
        {
            "providers": {
                "p": {
                    "base_url": scripted_model.url,
                    "api_key_env": "HTTP_TEST_KEY",
                    "default_headers": {"X-Team": "blue"},
                }
            }
        }
    )
    factory = ModelFactory(Settings(model_max_retries=1, model_retry_base_delay=0.01), manifest)
    yield factory
    await factory.aclose()


async def call(model: Model, request: ModelRequest) -> tuple[list[str], ModelResponse]:
    deltas: list[str] = []
    async for item in model.stream(request):
        if isinstance(item, str):
            deltas.append(item)
        else:
            return deltas, item
    raise AssertionError("the stream ended without a response")


async def test_a_worker_refuses_a_pydantic_ai_provider_it_cannot_call_yet_and_says_so(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    with pytest.raises(ConfigError, match=r"'anthropic' is not callable by this worker yet"):
        await models.get("anthropic:claude-sonnet-4-5")
    with pytest.raises(UnknownProviderError, match=r"did you mean 'openai:gpt-4o'\?"):
        await models.get("gpt-4o")
    assert scripted_model.request_count == 0


def ask(text: str, **settings: object) -> ModelRequest:
    return ModelRequest(
        messages=[{"role": "user", "content": text}],
        settings=ModelSettings.model_validate(settings),
    )


async def test_text_and_usage_are_streamed_and_assembled(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Reply("one two three", usage=(11, 3)))
    deltas, response = await call(await models.get("p:m"), ask("hi"))
    assert len(deltas) > 1 and "".join(deltas) == "one two three"
    assert response.text == "one two three"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 3)
    assert response.finish_reason == "stop"


async def test_the_request_carries_the_providers_url_key_headers_and_settings(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    request = ask("hi", temperature=0.5, max_tokens=7, extra_body={"top_k": 3, "stream": True})
    await call(await models.get("p:m"), request)
    [sent] = scripted_model.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "<redacted>"  # sent; the server hides its value
    assert sent.headers["x-team"] == "blue"
    assert sent.body["model"] == "m" and sent.stream
    assert sent.body["messages"] == [{"role": "user", "content": "hi"}]
    assert sent.body["stream_options"] == {"include_usage": True}
    assert (sent.body["temperature"], sent.body["max_tokens"], sent.body["top_k"]) == (0.5, 7, 3)


async def test_calls_in_turn_reuse_one_connection(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    model = await models.get("p:m")
    for _ in range(3):  # a stream read to its end gives its connection back to the pool
        _, response = await call(model, ask("hi"))
        assert response.text == "hi"
    assert scripted_model.request_count == 3
    assert scripted_model.connections_opened == 1


async def test_tool_call_fragments_become_whole_calls(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    calls = (ToolCallSpec("add", {"a": 1, "b": 2}, id="c1"), ToolCallSpec("shout", {"s": "x"}))
    scripted_model.script(Reply(tool_calls=calls))
    _, response = await call(await models.get("p:m"), ask("hi"))
    assert [(c.id, c.name) for c in response.tool_calls] == [("c1", "add"), ("call_1", "shout")]
    assert json.loads(response.tool_calls[0].arguments) == {"a": 1, "b": 2}
    assert response.finish_reason == "tool_calls"


async def test_a_client_error_names_the_status_and_the_providers_message(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Fail(422, message=f"no such field (key {KEY})"))
    with pytest.raises(ModelError, match="p:m: model request failed: HTTP 422: no such field") as e:
        await call(await models.get("p:m"), ask("hi"))
    assert KEY not in str(e.value) and "<redacted>" in str(e.value)
    assert e.value.details["status_code"] == 422
    # The SDK's error, whose message echoed the key, is not kept inside ours either.
    assert e.value.__context__ is None and e.value.__cause__ is None


async def test_a_server_error_is_retried_then_answered(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Fail(503, retry_after=0.01), Reply("fine"))
    _, response = await call(await models.get("p:m"), ask("hi"))
    assert response.text == "fine" and scripted_model.request_count == 2


async def test_an_error_the_server_sends_mid_stream_is_named(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("error"))
    with pytest.raises(
        ModelError, match="p:m: model request failed: APIError: the model crashed mid-stream"
    ):
        await call(await models.get("p:m"), ask("hi"))


async def test_an_answer_that_is_not_an_event_stream_is_named(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("body"))
    with pytest.raises(ModelError, match="malformed response.*expected an event stream"):
        await call(await models.get("p:m"), ask("hi"))


def tls_server(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA, and a server-side TLS context with a certificate for 127.0.0.1 it signed."""
    ca, cert, key = make_certificates(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


def test_the_worker_pools_read_and_write_on_plain_asyncio() -> None:
    # If an httpx upgrade moves the pool, this fails: the pools would be back on anyio.
    assert use_asyncio_network(openai.DefaultAsyncHttpxClient())


async def test_a_provider_over_https_streams_through_the_asyncio_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, context = tls_server(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the pools trust the test CA
    with ScriptedModelServer(tls=context) as server:
        assert server.url.startswith("https://")
        manifest = AgentsManifest.model_validate({"providers": {"tls": {"base_url": server.url}}})
        factory = ModelFactory(Settings(model_max_retries=0), manifest)
        try:
            model = await factory.get("tls:m")
            for _ in range(2):  # the second call reuses the TLS connection
                deltas, response = await call(model, ask("over tls"))
                assert response.text == "over tls" and "".join(deltas) == "over tls"
            assert server.connections_opened == 1
        finally:
            await factory.aclose()


async def failure(base_url: str, settings: Settings) -> ModelError:
    """The error a call to a provider at ``base_url`` ends with."""
    manifest = AgentsManifest.model_validate({"providers": {"p": {"base_url": base_url}}})
    factory = ModelFactory(settings, manifest)
    try:
        with pytest.raises(ModelError) as raised:
            await call(await factory.get("p:m"), ask("x"))
        return raised.value
    finally:
        await factory.aclose()


async def test_an_untrusted_certificate_is_a_connection_failure_naming_it(
    tmp_path: Path,
) -> None:
    _, context = tls_server(tmp_path)
    with ScriptedModelServer(tls=context) as server:
        error = await failure(server.url, Settings(model_max_retries=0))
        assert server.request_count == 0
    assert "APIConnectionError" in str(error) and "CERTIFICATE_VERIFY_FAILED" in str(error)


async def test_a_server_that_is_not_there_is_a_connection_failure() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(model_max_retries=1, model_retry_base_delay=0.01)
    error = await failure(f"http://127.0.0.1:{port}/v1", settings)
    assert "after 2 attempts: APIConnectionError" in str(error)


async def test_a_server_that_stops_answering_times_out_per_request(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Hang(5))
    settings = Settings(model_request_timeout=0.3, model_max_retries=0)
    error = await failure(scripted_model.url, settings)
    assert "APITimeoutError: Request timed out" in str(error)


async def test_a_page_that_is_no_event_stream_is_named_not_taken_for_an_empty_answer(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("html"))  # a proxy's sign-in page, say
    with pytest.raises(ModelError, match="expected an event stream, got text/html.*Sign in"):
        await call(await models.get("p:m"), ask("hi"))


@pytest.mark.parametrize("after", ["done-then-close", "done-then-open"])
async def test_an_answer_ends_at_done_whatever_the_connection_does_after(
    scripted_model: ScriptedModelServer, after: Literal["done-then-close", "done-then-open"]
) -> None:
    # Held open, the rest of the body would have been waited for until the request timed out.
    scripted_model.script(Malformed(after), Malformed(after))
    manifest = AgentsManifest.model_validate({"providers": {"p": {"base_url": scripted_model.url}}})
    factory = ModelFactory(Settings(model_max_retries=0, model_request_timeout=30), manifest)
    try:
        model = await factory.get("p:m")
        for _ in range(2):  # and the connection it left unfinished is not used again
            deltas, response = await call(model, ask("whole answer"))
            assert response.text == "".join(deltas) == "whole answer"
        assert scripted_model.connections_opened == 2
    finally:
        await factory.aclose()


async def test_a_body_that_cannot_be_decoded_is_a_named_model_error(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Malformed("gzip"))
    error = await failure(scripted_model.url, Settings(model_max_retries=0))
    assert "decompressing" in str(error)


async def test_a_stream_that_stops_after_its_headers_times_out_as_a_timeout(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("one two three", token_delay=5))
    settings = Settings(model_request_timeout=0.3, model_max_retries=0)
    error = await failure(scripted_model.url, settings)
    assert "APITimeoutError" in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
        (418, openai.APIStatusError),
    ],
)
async def test_a_status_is_raised_as_the_sdks_own_subclass(
    scripted_model: ScriptedModelServer, status: int, kind: type[openai.APIStatusError]
) -> None:
    scripted_model.script(Fail(status))
    async with openai.DefaultAsyncHttpxClient() as http:
        client = openai.AsyncOpenAI(base_url=scripted_model.url, api_key="k", http_client=http)
        endpoint = ChatEndpoint.of(client, http)
        with pytest.raises(openai.APIStatusError) as raised:
            async for _ in endpoint.stream({"model": "m", "messages": [], "stream": True}, 5):
                pass
    assert type(raised.value) is kind and raised.value.status_code == status


def test_a_retry_after_that_is_no_number_leaves_our_backoff() -> None:
    policy = RetryPolicy(base_delay=0.5)
    for advice in (float("nan"), float("inf")):
        assert 0.375 <= policy.delay(0, advice) <= 0.625
    assert policy.delay(0, 2.0) == 2.0


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 1100, reason="needs more than 1,100 fds"
)
def test_idle_connections_are_checked_on_descriptors_past_1024() -> None:
    # select() refuses descriptors from 1024 on; a worker with many connections has them.
    ours, theirs = socket.socketpair()
    far = socket.socket(fileno=fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD, 1024))
    with ours, theirs, far:
        assert far.fileno() >= 1024
        assert not _readable_now(far.fileno())
        theirs.sendall(b"x")
        assert _readable_now(far.fileno())
