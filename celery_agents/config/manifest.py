"""``AgentsManifest``: providers, tools, agents, teams and schedules declared in YAML.

A bad file gives a ``ConfigError`` that names the file and the field (``agents.analyst.model``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import CeleryAgentsError, ConfigError, UnknownAgentError, UnknownProviderError
from ..output import OutputSpec
from ..validation import field_errors
from .deliver import MAX_TARGETS, DeliverTarget
from .model_refs import BUILTIN_PROVIDERS, is_builtin_provider, unknown_provider
from .model_refs import parse_model_ref as parse_model_ref  # its home before model_refs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelInfo(_Strict):
    """What a model can do, where known (jobs are checked against it before queueing)."""

    vision: bool | None = None
    context_tokens: int | None = Field(None, gt=0)


class ProviderLimits(_Strict):
    """Fleet-wide limits of one provider, shared by every worker through Redis.

    The per-minute figures are counted over a sliding window of ``window_seconds``: a shorter
    window keeps the same rate but allows smaller bursts.
    """

    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0)
    window_seconds: float = Field(60.0, gt=0)

    @property
    def requests(self) -> int | None:
        """Requests allowed in one window."""
        if self.requests_per_minute is None:
            return None
        return max(1, int(self.requests_per_minute * self.window_seconds / 60))

    @property
    def tokens(self) -> float | None:
        """Tokens allowed in one window (the bucket's size)."""
        if self.tokens_per_minute is None:
            return None
        return self.tokens_per_minute * self.window_seconds / 60


class ProviderSpec(_Strict):
    """A named OpenAI-compatible endpoint. API keys are read from ``api_key_env`` on workers.

    ``structured_output`` picks pydantic-ai's output mode for typed runs: ``json_schema`` (its
    native mode: ``response_format``), ``tool`` (the model answers through a ``final_result``
    tool, for servers without ``response_format``) or ``prompted`` (the schema in the
    instructions). Unset: ``json_schema`` on OpenAI-compatible providers, else pydantic-ai's
    choice for the provider.
    """

    base_url: str | None = None
    api_key_env: str | None = None
    default_headers: dict[str, str] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    structured_output: Literal["json_schema", "tool", "prompted"] | None = None
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    limits: ProviderLimits | None = None


class ModelSettings(_Strict):
    """Sampling options sent with each request; ``extra_body`` passes anything else through."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)


class AgentSpec(_Strict):
    """What a worker needs to run an agent; crosses the broker as JSON (no secrets)."""

    name: str = ""
    model: str
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)
    model_settings: ModelSettings = Field(default_factory=ModelSettings)
    description: str = ""
    output_type: OutputSpec | None = None

    @field_validator("output_type", mode="before")
    @classmethod
    def _output_from_path(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return OutputSpec.of(value)
            except CeleryAgentsError as exc:
                raise ValueError(exc.message) from None
        return value


class TenantSpec(_Strict):
    """A tenant's share of the fleet: concurrent runs and tokens per (UTC) day."""

    max_concurrent_runs: int | None = Field(None, gt=0)
    daily_token_budget: int | None = Field(None, gt=0)


class TeamSpec(_Strict):
    mode: Literal["parallel", "sequential"] = "parallel"
    members: list[str] = Field(min_length=1)
    shared_prompt: str | None = None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: Any) -> Any:
    """``90``, ``"90s"``, ``"10m"``, ``"2h"`` or ``"1d"``: seconds."""
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found is None:
            raise ValueError(f"{value!r} is not a duration: give seconds, or e.g. 90s, 10m, 2h, 1d")
        return float(found.group(1)) * _SECONDS[found.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class BudgetSpec(_Strict):
    tokens_per_day: int = Field(gt=0)


class ScheduleSpec(_Strict):
    """A recurring analysis: what runs, on which grid, and its policies (Temporal's names)."""

    agent: str | None = None
    team: str | None = None
    prompt: str = Field(min_length=1)  # a run needs something to answer
    every: Annotated[float, BeforeValidator(_seconds), Field(gt=0)] | None = None
    cron: str | None = None
    timezone: str = "UTC"
    overlap: Literal["skip", "buffer_one", "cancel_other", "allow_all"] = "skip"
    catchup_window: Seconds | None = None
    pause_after_failures: int = Field(5, ge=0)
    jitter: Seconds = 0.0
    start_at: datetime | None = None  # without a zone: in ``timezone``
    end_at: datetime | None = None
    max_count: int | None = Field(None, ge=1)
    budget: BudgetSpec | None = None
    deliver: list[DeliverTarget] = Field(default_factory=list, max_length=MAX_TARGETS)

    @model_validator(mode="after")
    def _one_target_one_timing(self) -> ScheduleSpec:
        if (self.agent is None) == (self.team is None):
            raise ValueError("give exactly one of 'agent' or 'team'")
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' or 'cron'")
        if self.cron is not None:
            from ..scheduler.cron import CronError, next_fire, parse_cron  # pure, no Celery

            try:
                next_fire(parse_cron(self.cron), datetime.now(UTC), self.timezone)
            except CronError as exc:
                raise ValueError(str(exc)) from None
        else:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {self.timezone!r}") from None
        start, end = self.epoch(self.start_at), self.epoch(self.end_at)
        if start is not None and end is not None and end <= start:
            raise ValueError("end_at must come after start_at")
        return self

    def epoch(self, when: datetime | None) -> float | None:
        """``start_at`` or ``end_at`` in seconds since the epoch (a naive time is in
        ``timezone``)."""
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(self.timezone))
        return when.timestamp()


class AgentsManifest(_Strict):
    """The YAML manifest that workers, beat and the CLI load (``CELERY_AGENTS_MANIFEST``)."""

    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    teams: dict[str, TeamSpec] = Field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> AgentsManifest:
        # Each message names its own path: these checks span sections, so pydantic gives none.
        if shared := sorted(self.agents.keys() & self.teams.keys()):
            # A team member or `celery-agents run` of that name would only ever reach the agent.
            raise ValueError(
                "; ".join(f"agents.{name} and teams.{name}" for name in shared)
                + ": an agent and a team may not share a name"
            )
        for name, agent in self.agents.items():
            agent.name = agent.name or name
            try:
                self.check_model(agent.model)
            except (ValueError, UnknownProviderError) as exc:
                raise ValueError(f"agents.{name}.model: {exc}") from None
        for name, team in self.teams.items():
            for member in team.members:
                if member not in self.agents and member not in self.teams:
                    raise ValueError(f"teams.{name}.members: unknown agent or team {member!r}")
        for name, schedule in self.schedules.items():
            if schedule.agent is not None and schedule.agent not in self.agents:
                raise ValueError(f"schedules.{name}.agent: unknown agent {schedule.agent!r}")
            if schedule.team is not None and schedule.team not in self.teams:
                raise ValueError(f"schedules.{name}.team: unknown team {schedule.team!r}")
        return self

    @property
    def provider_names(self) -> set[str]:
        """Every provider known by name: the manifest's, pydantic-ai's, ``local`` and ``test``
        (pydantic-ai's Gateway prefixes, ``gateway/<provider>``, are known too)."""
        return set(BUILTIN_PROVIDERS) | set(self.providers)

    def check_model(self, model: str) -> tuple[str, str]:
        """``(provider, name)`` of a model string whose provider is known here; else a
        ``ValueError`` (no provider) or ``UnknownProviderError`` that names the fix."""
        provider, name = parse_model_ref(model)
        if provider not in self.providers and not is_builtin_provider(provider):
            message = unknown_provider(model, provider, self.providers)
            raise UnknownProviderError(message, provider=provider, model=model)
        return provider, name

    @classmethod
    def from_yaml(cls, path: str | Path) -> AgentsManifest:
        """Load and validate a manifest file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read manifest: {exc.strerror}", path=str(path)
            ) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<manifest>") -> AgentsManifest:
        try:
            data = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{source}:{where}: invalid YAML: {problem}", path=source) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: the manifest must be a mapping at the top level", path=source
            )
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {field_errors(exc, root=None)}", path=source) from None
        manifest.source = source
        return manifest

    def provider(self, name: str) -> ProviderSpec:
        """A provider's profile; built-in providers have an empty default profile."""
        if name in self.providers:
            return self.providers[name]
        if is_builtin_provider(name):
            return ProviderSpec()
        raise UnknownProviderError(
            f"unknown provider {name!r} (known: {', '.join(sorted(self.provider_names))})",
            provider=name,
        )

    def model_info(self, model_ref: str) -> ModelInfo:
        """What is known about a model (nothing, unless the manifest or a built-in says)."""
        provider, name = parse_model_ref(model_ref)
        spec = self.providers.get(provider)
        if spec is not None and name in spec.models:
            return spec.models[name]
        return _BUILTIN_MODELS.get(provider, ModelInfo())

    def agent_spec(self, name: str) -> AgentSpec:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            raise UnknownAgentError(
                f"unknown agent {name!r} in {self.source or 'the manifest'} (known: {known})",
                agent=name,
            ) from None


# SmolLM2-135M reads text only; our llama.cpp server gives it a 4,096-token context.
_BUILTIN_MODELS = {"local": ModelInfo(vision=False, context_tokens=4096)}


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    one silently: a second ``analyst:`` would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<": merged keys may be overridden, as YAML means them to be
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader names that
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)
