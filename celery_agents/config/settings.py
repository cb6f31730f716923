"""``Settings``: the one typed configuration object, read from ``CELERY_AGENTS_*`` variables."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis", "rediss", "unix")
REDIS_URL_FORM = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH"


class Settings(BaseSettings):
    """Where Redis and the broker are, and the knobs of runs and workers.

    Explicit arguments win over the environment; the environment wins over defaults.
    """

    # An empty variable is unset (compose passes `X=` for a variable the user left blank):
    # else CELERY_AGENTS_MANIFEST= would be the directory "." and a number "" an error.
    # An error never repeats the value: a URL may hold a password.
    model_config = SettingsConfigDict(
        env_prefix="CELERY_AGENTS_",
        extra="forbid",
        env_ignore_empty=True,
        hide_input_in_errors=True,
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    result_backend: str | None = None
    manifest: Path | None = None

    key_prefix: str = "celery_agents"
    redis_max_connections: int = Field(
        128, gt=1, description="per process; past it, callers wait for a free connection"
    )
    queue: str = "celery_agents"

    run_timeout: float = Field(600.0, gt=0, description="default per-run timeout, seconds")
    result_ttl: int = Field(3600, gt=0, description="seconds results and replay logs are kept")
    history_ttl: int = Field(7 * 86400, gt=0, description="seconds a conversation is kept")
    replay_max_events: int = Field(20_000, gt=0)

    worker_pool: str = Field(
        "threads",
        description="Celery's pool: threads (the default; each thread waits on the process's "
        "one event loop, where the runs' I/O happens), solo or prefork",
    )
    worker_concurrency: int = Field(
        100, gt=0, description="runs in flight per worker process (threads are made as needed)"
    )
    task_events: bool = Field(
        False,
        description="Celery task events from the start (about 1 ms of worker CPU per run on a "
        "2-core host). Off by default, as in Celery: a running Flower turns them on in live "
        "workers within seconds, so runs cost nothing extra while nobody watches",
    )
    worker_dead_after: float = Field(
        6.0,
        ge=2,
        description="seconds after a worker process last said it lives before a live worker "
        "takes its runs over (a stalled one that comes back writes nothing of them)",
    )
    journal: bool = Field(
        True,
        description="journal each model response and tool call of a run, so a run redelivered "
        "after its worker died replays them instead of calling the model or the tool again",
    )
    visibility_timeout: float = Field(
        120.0,
        ge=3,
        description="seconds after a worker's last heartbeat before a Redis broker hands its "
        "runs to another worker (live workers keep their runs invisible, however long)",
    )

    model_max_retries: int = Field(4, ge=0)
    model_retry_base_delay: float = Field(0.5, ge=0)
    model_retry_max_delay: float = Field(30.0, ge=0)
    model_request_timeout: float = Field(120.0, gt=0)
    max_tool_turns: int = Field(10, gt=0)

    # Hostile or runaway input: clients refuse it before sending, workers before running.
    max_prompt_chars: int = Field(
        200_000, gt=0, description="longest prompt a run may carry, in characters"
    )
    max_payload_bytes: int = Field(
        1_048_576,
        gt=0,
        description="largest run message, in bytes of JSON (a Team's routing data excluded)",
    )

    store_url: str | None = Field(
        None,
        description="the run store: sqlite+aiosqlite:///PATH, postgresql+asyncpg://..., a "
        "file path, or none (off); unset, a SQLite file under the user's data directory",
    )
    store_content: bool = Field(
        True, description="keep each run's prompt and answer in the store (false: metadata)"
    )
    store_retention_days: float = Field(
        90, gt=0, description="days the store keeps a run; older ones are purged daily"
    )
    store_backlog_max: int = Field(
        1_000_000,
        gt=0,
        description="records kept in Redis for the store while its database is away; past "
        "it the oldest are dropped (celery-agents status shows the backlog)",
    )

    delivery_max_age: float = Field(
        86400,
        gt=0,
        description="seconds a run's outcome is retried on a deliver target that fails (with "
        "exponential backoff); after it the delivery is failed, to list and retry by hand",
    )
    delivery_first_backoff: float = Field(
        1.0, gt=0, description="seconds before a failed delivery's first retry (then doubling)"
    )

    local_base_url: str | None = Field(
        None, description="an already running `local` model server; else workers start one"
    )
    local_max_tokens: int = Field(
        512,
        gt=0,
        description="output tokens a `local:` model call may produce when the agent sets no "
        "max_tokens: a small model can otherwise run away until its context is full",
    )

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, url: str) -> str:
        problem = redis_url_problem(url)
        if problem:
            raise ValueError(f"{problem}; expected {REDIS_URL_FORM}")
        return url

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def backend(self) -> str:
        return self.result_backend or self.redis_url


def redis_url_problem(url: str) -> str | None:
    """What keeps ``url`` from being a Redis URL (redis-py's own parse says it later, in a
    traceback), or None."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        return "not a Redis URL (no redis://, rediss:// or unix:// in front)"
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path"
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if not parts.hostname:
        return "it names no host"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return f"its database must be a number (/0, /1, ...), not {db!r}"
    return None


def shown_url(url: str) -> str:
    """``url`` fit for logs and banners: its password, if any, replaced by ``**``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{user}**@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))
