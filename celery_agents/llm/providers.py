"""``ModelFactory``: turns ``provider:name`` into a ``Model``, on workers (where keys live).

An ``AsyncOpenAI`` client reads a provider's configuration (URL, key, headers); the calls go
through ``ChatEndpoint``s, several per provider, shared by all runs of the worker process and
taken in turn (``CLIENT_SHARDS``): a worker keeps hundreds of model calls in flight, and one
HTTP pool scans all of its connections on every request and response, and keeps only 100 of
them alive (openai's default), reconnecting for every call beyond that. Smaller pools that keep
every connection they open cost a fraction of that. Their sockets are read and written on plain
asyncio (``http_backend``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import openai
from openai import AsyncOpenAI

from ..config.manifest import AgentsManifest, ProviderSpec
from ..config.settings import Settings
from ..errors import ConfigError, UnknownProviderError
from .base import Model
from .chat_http import ChatEndpoint, http_library
from .http_backend import use_asyncio_network
from .offline import offline_model
from .openai_model import OpenAIModel, RetryPolicy

if TYPE_CHECKING:
    from .local import LocalModelProcess

_CHAT_COMPLETIONS = frozenset({"openai", "local"})  # built-ins this core can call
_NO_KEY = "not-needed"  # OpenAI-compatible servers that take no key still want a header
CLIENT_SHARDS = 64
CONNECTIONS = 1024  # per provider and worker process, over all its clients (openai's: 1000)


class ModelFactory:
    def __init__(
        self,
        settings: Settings,
        manifest: AgentsManifest,
        on_throttle: Callable[[str, float], Awaitable[None]] | None = None,
        before_retry: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._on_throttle = on_throttle
        self._before_retry = before_retry
        self._settings = settings
        self._manifest = manifest
        self._endpoints: dict[str, tuple[list[ChatEndpoint], str | None]] = {}
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
        if provider not in self._manifest.providers and provider not in _CHAT_COMPLETIONS:
            # Known to pydantic-ai, but this core speaks only Chat Completions (issue 17).
            raise ConfigError(
                f"model {ref!r}: provider {provider!r} is not callable by this worker yet; it "
                "calls 'openai:', 'local:', 'test:' and the manifest's OpenAI-compatible providers",
                provider=provider,
            )
        spec = self._manifest.provider(provider)
        known = self._endpoints.get(provider) or await self._create_endpoints(provider, spec)
        endpoints, key = known
        throttle, before_retry = self._on_throttle, self._before_retry
        return OpenAIModel(
            endpoints[next(self._turn) % len(endpoints)],
            name,
            ref=ref,
            retry=self._retry,
            request_timeout=self._settings.model_request_timeout,
            secret=key,
            on_throttle=(lambda seconds: throttle(provider, seconds)) if throttle else None,
            before_retry=(lambda: before_retry(provider)) if before_retry else None,
        )

    async def _create_endpoints(
        self, provider: str, spec: ProviderSpec
    ) -> tuple[list[ChatEndpoint], str | None]:
        base_url = spec.base_url
        if provider == "local" and base_url is None:
            base_url = self._settings.local_base_url or await self._local_server_url()
        key = _api_key(provider, spec)
        per_client = CONNECTIONS // CLIENT_SHARDS  # 16: round robin spreads the calls evenly
        http = http_library()
        limits = http.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        # One TLS context for all (each would load the CA store again: ~0.9 MB a client).
        tls = http.create_ssl_context()
        pools = [
            openai.DefaultAsyncHttpxClient(limits=limits, verify=tls) for _ in range(CLIENT_SHARDS)
        ]
        for pool in pools:
            use_asyncio_network(pool)  # anyio's per-read loop turns cost latency at scale
        try:
            client = AsyncOpenAI(
                api_key=key,
                base_url=base_url,
                default_headers=spec.default_headers or None,
                max_retries=0,  # our retry loop honours retry-after and knows about streams
                http_client=pools[0],
            )
        except openai.OpenAIError as exc:
            raise ConfigError(f"provider {provider!r}: {exc}", provider=provider) from None
        known = [ChatEndpoint.of(client, pool) for pool in pools], key
        self._endpoints[provider] = known
        return known

    async def _local_server_url(self) -> str:
        from .local import ensure_local_server  # optional extra: imported only when used

        self._local = await asyncio.to_thread(ensure_local_server)
        return self._local.base_url

    async def aclose(self) -> None:
        for endpoints, _ in self._endpoints.values():
            for endpoint in endpoints:
                await endpoint.http.aclose()
        self._endpoints.clear()
        if self._local is not None:
            self._local.stop()


def _api_key(provider: str, spec: ProviderSpec) -> str | None:
    env = spec.api_key_env or ("OPENAI_API_KEY" if provider == "openai" else None)
    if env is None:
        return _NO_KEY
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"provider {provider!r} needs an API key: set {env} in the workers' environment",
            provider=provider,
        )
    return key
