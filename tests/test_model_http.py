"""The worker's model calls over a real HTTP server: pydantic-ai's OpenAI model behind our
``GuardedModel``. What a call sends (the provider's URL, key, headers, settings), what the run
gets back (streamed text, tool calls, usage), and how it fails: errors that name the status and
the provider's message, with the key taken out, retried where a retry can help.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from celery_agents import Settings
from celery_agents.config.manifest import AgentsManifest, ModelSettings
from celery_agents.errors import ConfigError, ModelError, UnknownProviderError
from celery_agents.llm.agent_loop import LoopResult, run_agent
from celery_agents.llm.guard import RetryPolicy
from celery_agents.llm.providers import CLIENT_SHARDS, ModelFactory
from celery_agents.llm.settings import as_pydantic_ai
from celery_agents.testing.emitter import Collected
from celery_agents.testing.scripted_server import (
    Fail,
    Hang,
    Malformed,
    Reply,
    ScriptedModelServer,
    ToolCallSpec,
)
from celery_agents.tools import Tool
from tests.support.tools import add
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


async def call(
    models: ModelFactory,
    prompt: str,
    *,
    ref: str = "p:m",
    tools: list[Tool] | None = None,
    **settings: Any,
) -> tuple[list[str], LoopResult]:
    emit = Collected()
    result = await run_agent(
        await models.get(ref),
        prompt,
        emit=emit,
        tools=tools or [],
        settings={"max_retries": 0, **settings},  # type: ignore[typeddict-item]
    )
    return emit.texts, result


async def test_a_model_string_without_a_provider_names_the_fix(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    with pytest.raises(UnknownProviderError, match=r"did you mean 'openai:gpt-4o'\?"):
        await models.get("gpt-4o")
    assert scripted_model.request_count == 0


async def test_text_and_usage_are_streamed_and_assembled(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Reply("one two three", usage=(11, 3)))
    deltas, result = await call(models, "hi")
    assert len(deltas) > 1 and "".join(deltas) == "one two three"
    assert result.text == "one two three"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 3)


async def test_the_request_carries_the_providers_url_key_headers_and_settings(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    await call(models, "hi", temperature=0.5, max_tokens=7, extra_body={"top_k": 3})
    [sent] = scripted_model.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "<redacted>"  # sent; the server hides its value
    assert sent.headers["x-team"] == "blue"
    assert sent.body["model"] == "m" and sent.stream
    assert sent.body["messages"] == [{"role": "user", "content": "hi"}]
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.5 and sent.body["top_k"] == 3
    assert sent.body.get("max_tokens", sent.body.get("max_completion_tokens")) == 7


async def test_calls_in_turn_reuse_their_connections(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    for _ in range(2 * CLIENT_SHARDS):  # a stream read to its end gives its connection back
        _, result = await call(models, "hi")
        assert result.text == "hi"
    assert scripted_model.request_count == 2 * CLIENT_SHARDS
    assert scripted_model.connections_opened == CLIENT_SHARDS  # one per client, taken in turn


async def test_tool_calls_are_run_and_their_results_sent_back(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    calls = (ToolCallSpec("add", {"a": 1, "b": 2}, id="c1"), ToolCallSpec("add", {"a": 3, "b": 4}))
    scripted_model.script(Reply(tool_calls=calls), Reply("3 and 7"))
    _, result = await call(models, "hi", tools=[Tool.from_function(add)])
    assert (result.tool_calls[0].tool_call_id, result.tool_calls[0].result) == ("c1", 3)
    assert sorted(c.result for c in result.tool_calls) == [3, 7]
    second = scripted_model.requests[1].body["messages"]
    assert [m["content"] for m in second if m["role"] == "tool"] == ["3", "7"]
    assert result.text == "3 and 7"


async def test_a_client_error_names_the_status_and_the_providers_message(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Fail(422, message=f"no such field (key {KEY})"))
    with pytest.raises(ModelError, match="p:m: model request failed: HTTP 422: no such field") as e:
        await call(models, "hi")
    assert KEY not in str(e.value) and "<redacted>" in str(e.value)
    assert e.value.details["status_code"] == 422
    # The SDK's error, whose message echoed the key, is not kept inside ours either.
    assert e.value.__context__ is None and e.value.__cause__ is None


async def test_a_server_error_is_retried_then_answered(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Fail(503, retry_after=0.01), Reply("fine"))
    _, result = await call(models, "hi")
    assert result.text == "fine" and scripted_model.request_count == 2


async def test_a_fractional_retry_after_is_waited_out_before_the_retry(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    """``Retry-After: 0.4`` (pydantic-ai reads whole seconds only): our backoff is 0.01 s."""
    scripted_model.script(Fail(503, retry_after=0.4), Reply("fine"))
    _, result = await call(models, "hi")
    first, second = scripted_model.requests
    assert result.text == "fine"
    assert second.received_at - first.received_at >= 0.4


async def test_an_error_the_server_sends_mid_stream_is_named_and_not_retried(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("error"), Reply("never asked for"))
    with pytest.raises(ModelError, match="p:m: model request failed.*the model crashed mid-stream"):
        await call(models, "hi")
    assert scripted_model.request_count == 1


async def test_an_answer_that_is_not_an_event_stream_is_named(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("body"))
    with pytest.raises(ModelError, match="p:m"):
        await call(models, "hi")


def tls_server(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA, and a server-side TLS context with a certificate for 127.0.0.1 it signed."""
    ca, cert, key = make_certificates(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


async def test_a_provider_over_https_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, context = tls_server(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the pools trust the test CA
    with ScriptedModelServer(tls=context) as server:
        assert server.url.startswith("https://")
        manifest = AgentsManifest.model_validate({"providers": {"tls": {"base_url": server.url}}})
        factory = ModelFactory(Settings(model_max_retries=0), manifest)
        try:
            deltas, result = await call(factory, "over tls", ref="tls:m")
            assert result.text == "over tls" and "".join(deltas) == "over tls"
        finally:
            await factory.aclose()


async def failure(base_url: str, settings: Settings, **request: Any) -> ModelError:
    """The error a call to a provider at ``base_url`` ends with."""
    manifest = AgentsManifest.model_validate({"providers": {"p": {"base_url": base_url}}})
    factory = ModelFactory(settings, manifest)
    try:
        with pytest.raises(ModelError) as raised:
            await call(factory, "x", **request)
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
    assert "ModelConnectionError" in str(error) and "CERTIFICATE_VERIFY_FAILED" in str(error)


async def test_a_server_that_is_not_there_is_a_connection_failure() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(model_max_retries=1, model_retry_base_delay=0.01)
    error = await failure(f"http://127.0.0.1:{port}/v1", settings)
    assert "after 2 attempts: ModelConnectionError" in str(error)


async def test_a_server_that_stops_answering_times_out_per_request(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Hang(5))
    error = await failure(scripted_model.url, Settings(model_max_retries=0), timeout=0.3)
    assert "Timeout" in str(error)


async def test_a_page_that_is_no_event_stream_is_named_not_taken_for_an_empty_answer(
    models: ModelFactory, scripted_model: ScriptedModelServer
) -> None:
    scripted_model.script(Malformed("html"))  # a proxy's sign-in page, say
    with pytest.raises(ModelError, match="p:m"):
        await call(models, "hi")


@pytest.mark.parametrize("after", ["done-then-close", "done-then-open"])
async def test_an_answer_ends_at_done_whatever_the_connection_does_after(
    scripted_model: ScriptedModelServer, after: Literal["done-then-close", "done-then-open"]
) -> None:
    # Held open, the rest of the body would have been waited for until the request timed out.
    scripted_model.script(Malformed(after), Malformed(after))
    manifest = AgentsManifest.model_validate({"providers": {"p": {"base_url": scripted_model.url}}})
    factory = ModelFactory(Settings(model_max_retries=0), manifest)
    try:
        for _ in range(2):
            deltas, result = await call(factory, "whole answer", timeout=30)
            assert result.text == "".join(deltas) == "whole answer"
    finally:
        await factory.aclose()


async def test_a_body_that_cannot_be_decoded_is_a_named_model_error(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Malformed("gzip"))
    error = await failure(scripted_model.url, Settings(model_max_retries=0))
    assert "p:m" in str(error)


async def test_a_stream_that_stops_after_its_headers_times_out_as_a_timeout(
    scripted_model: ScriptedModelServer,
) -> None:
    scripted_model.script(Reply("one two three", token_delay=5))
    error = await failure(scripted_model.url, Settings(model_max_retries=0), timeout=0.3)
    assert "Timeout" in str(error)


def test_a_retry_after_that_is_no_number_leaves_our_backoff() -> None:
    policy = RetryPolicy(base_delay=0.5)
    for advice in (float("nan"), float("inf")):
        assert 0.375 <= policy.delay(0, advice) <= 0.625
    assert policy.delay(0, 2.0) == 2.0


async def test_a_pydantic_ai_prefix_whose_sdk_is_missing_names_the_package(
    models: ModelFactory,
) -> None:
    try:
        import google.genai  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-genai is installed here")
    with pytest.raises(ConfigError, match=r"install pydantic-ai-slim\[google\] where they run"):
        await models.get("google:gemini-2.0-flash")


async def test_an_anthropic_model_without_its_key_names_the_variable(
    models: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY in the workers' environment"):
        await models.get("anthropic:claude-sonnet-4-5")


def test_our_model_settings_reach_pydantic_ai_under_its_names() -> None:
    ours = ModelSettings(temperature=0.0, max_tokens=9, stop=["END"], extra_body={"top_k": 3})
    assert as_pydantic_ai(ours) == {
        "temperature": 0.0,  # zero is set, not left out
        "max_tokens": 9,
        "stop_sequences": ["END"],
        "extra_body": {"top_k": 3},
    }
    assert as_pydantic_ai(ModelSettings()) == {}
