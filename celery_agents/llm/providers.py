"""``ModelFactory``: turns ``provider:name`` into a pydantic-ai model, on workers (where keys
live), behind our ``GuardedModel``.

- ``openai:``, ``local:`` and the manifest's providers (an OpenAI-compatible ``base_url``,
  headers, a key from ``api_key_env``): pydantic-ai's ``OpenAIChatModel`` on Chat Completions.
  Each provider gets a few SDK clients, taken in turn (``CLIENT_SHARDS``): one HTTP pool serving
  hundreds of calls in flight scans all its connections on every request.
- ``anthropic:``: pydantic-ai's ``AnthropicModel``; ``ANTHROPIC_API_KEY`` and
  ``ANTHROPIC_BASE_URL`` are read from the worker's environment.
- every other pydantic-ai prefix: pydantic-ai builds it (``infer_model``), reading the
  provider's usual environment variables.
- ``test:``: the offline models (``offline``), unguarded.

SDK clients retry nothing (``max_retries=0``): ``GuardedModel`` owns retries, so that each is
one more request within the fleet's limits.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import openai
from pydantic_ai.exceptions import UserError as PydanticAIUserError
from pydantic_ai.models import Model, infer_model
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from ..config.manifest import AgentsManifest, ProviderSpec
from ..config.model_refs import RENAMED_PROVIDERS
from ..config.settings import Settings
from ..errors import ConfigError, UnknownProviderError
from .guard import GuardedModel, RequestLimiter, RetryPolicy
from .offline import offline_model

if TYPE_CHECKING:
    from .local import LocalModelProcess

_OPENAI_COMPATIBLE = frozenset({"openai", "local"})  # built-ins on Chat Completions
_NO_KEY = "not-needed"  # OpenAI-compatible servers that take no key still want a header
CLIENT_SHARDS = 8
CONNECTIONS = 1024  # per provider and worker process, over all its clients (openai's: 1000)


class ModelFactory:
    def __init__(
        self,
        settings: Settings,
        manifest: AgentsManifest,
        limiter: Callable[[str], RequestLimiter | None] = lambda provider: None,
    ) -> None:
        self._settings = settings
        self._manifest = manifest
        self._limiter = limiter
        self._clients: dict[str, tuple[list[openai.AsyncOpenAI], str | None]] = {}
        self._models: dict[str, list[Model]] = {}
        self._closers: list[Any] = []
        self._turn = itertools.count()
        self._local: LocalModelProcess | None = None
        self._retry = RetryPolicy(
            max_retries=settings.model_max_retries,
            base_delay=settings.model_retry_base_delay,
            max_delay=settings.model_retry_max_delay,
        )

    async def get(self, ref: str) -> Model:
        """The model for ``ref``; a ``UserError`` names an unknown provider or a missing key."""
        try:
            provider, name = self._manifest.check_model(ref)
        except ValueError as exc:
            raise UnknownProviderError(str(exc), model=ref) from None
        if provider == "test":
            return offline_model(name)
        models = self._models.get(ref)
        if models is None:
            models = self._models[ref] = await self._build(ref, provider, name)
        return models[next(self._turn) % len(models)]

    def openai_compatible(self, provider: str) -> bool:
        """Whether ``provider`` is called on Chat Completions through our own clients."""
        return provider in self._manifest.providers or provider in _OPENAI_COMPATIBLE

    async def _build(self, ref: str, provider: str, name: str) -> list[Model]:
        limiter = self._limiter(provider)
        if self.openai_compatible(provider):
            clients, key = self._clients.get(provider) or await self._openai_clients(provider)
            return [
                GuardedModel(
                    OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client)),
                    ref=ref,
                    retry=self._retry,
                    limiter=limiter,
                    secret=key,
                )
                for client in clients
            ]
        if provider == "anthropic":
            model, key = self._anthropic(name)
        else:
            model, key = _inferred(ref, provider, name), None
        return [GuardedModel(model, ref=ref, retry=self._retry, limiter=limiter, secret=key)]

    async def _openai_clients(self, provider: str) -> tuple[list[openai.AsyncOpenAI], str | None]:
        spec = self._manifest.provider(provider)
        base_url = spec.base_url
        if provider == "local" and base_url is None:
            base_url = self._settings.local_base_url or await self._local_server_url()
        if provider == "openai" and base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or None
        key = _api_key(provider, spec)
        per_client = CONNECTIONS // CLIENT_SHARDS
        limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(
            max_connections=per_client, max_keepalive_connections=per_client
        )
        clients = []
        try:
            for _ in range(CLIENT_SHARDS):
                http = openai.DefaultAsyncHttpxClient(limits=limits)
                self._closers.append(http)
                clients.append(
                    openai.AsyncOpenAI(
                        api_key=key,
                        base_url=base_url,
                        default_headers=spec.default_headers or None,
                        max_retries=0,  # GuardedModel retries, within the fleet's limits
                        http_client=http,
                    )
                )
        except openai.OpenAIError as exc:
            raise ConfigError(f"provider {provider!r}: {exc}", provider=provider) from None
        self._clients[provider] = clients, key
        return clients, key

    def _anthropic(self, name: str) -> tuple[Model, str]:
        import anthropic
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        key = _required_env("anthropic", "ANTHROPIC_API_KEY")
        client = anthropic.AsyncAnthropic(
            api_key=key, base_url=os.environ.get("ANTHROPIC_BASE_URL") or None, max_retries=0
        )
        self._closers.append(client)
        return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client)), key

    async def _local_server_url(self) -> str:
        from .local import ensure_local_server  # optional extra: imported only when used

        self._local = await asyncio.to_thread(ensure_local_server)
        return self._local.base_url

    async def aclose(self) -> None:
        for closer in self._closers:
            await closer.aclose()
        self._closers.clear()
        self._clients.clear()
        self._models.clear()
        if self._local is not None:
            self._local.stop()


def _inferred(ref: str, provider: str, name: str) -> Model:
    """A pydantic-ai provider we build nothing for: pydantic-ai reads its environment."""
    provider = RENAMED_PROVIDERS.get(provider, provider)
    try:
        return infer_model(f"{provider}:{name}")
    except PydanticAIUserError as exc:  # typically a missing key
        raise ConfigError(f"model {ref!r}: {exc}", provider=provider) from None
    except ImportError as exc:
        raise ConfigError(
            f"model {ref!r}: the workers lack the provider's package ({exc}); install "
            f"pydantic-ai-slim[{provider}] where they run",
            provider=provider,
        ) from None


def _api_key(provider: str, spec: ProviderSpec) -> str:
    env = spec.api_key_env or ("OPENAI_API_KEY" if provider == "openai" else None)
    return _NO_KEY if env is None else _required_env(provider, env)


def _required_env(provider: str, env: str) -> str:
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"provider {provider!r} needs an API key: set {env} in the workers' environment",
            provider=provider,
        )
    return key
