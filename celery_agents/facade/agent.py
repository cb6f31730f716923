"""``Agent``: an LLM agent whose runs execute on Celery workers.

agent = Agent(name="analyst", model="openai:gpt-4o-mini", system_prompt="You analyse.")
msg = await agent.run("analyze this")
msg = agent.run_sync("analyze this")
async with agent.run_stream("analyze") as stream:
    async for chunk in stream.stream(): ...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config.manifest import AgentsManifest, AgentSpec, ModelSettings, parse_model_ref
from ..errors import UnknownProviderError, UserError
from ..events import Event, RunDone
from ..jobs import Job
from ..messages import ChatMessage
from ..output import OutputSpec, import_type
from ..tasks.tree import MAX_NAME, AgentNode
from ..validation import field_errors
from .bridge import on_io
from .client import get_client
from .options import join_prompts
from .team import Member


class Agent(Member):
    """An agent definition plus its own conversation (``conversation_id``)."""

    def __init__(
        self,
        name: str,
        model: str,
        system_prompt: str = "",
        *,
        tools: Iterable[str] = (),
        output_type: Any = None,
        model_settings: dict[str, Any] | ModelSettings | None = None,
        conversation_id: str | None = None,
        description: str = "",
    ) -> None:
        self.output_class = output_class_of(output_type)
        try:
            self.spec = AgentSpec.model_validate(
                {
                    "name": name,
                    "model": model,
                    "system_prompt": system_prompt,
                    "tools": list(tools),
                    "model_settings": model_settings or {},
                    "description": description,
                    "output_type": output_type and OutputSpec.of(output_type),
                }
            )
            parse_model_ref(model)
        except ValidationError as exc:
            raise UserError(f"agent {name!r}: {field_errors(exc)}", agent=name) from None
        except ValueError as exc:
            raise UserError(f"agent {name!r}: {exc}", agent=name) from None
        if not name:
            raise UserError("an agent needs a non-empty name")
        if len(name) > MAX_NAME:
            raise UserError(f"an agent name has at most {MAX_NAME} characters, got {len(name)}")
        self.conversation_id = conversation_id or uuid.uuid4().hex
        # A conversation named by the caller may have begun long ago: it continues from the
        # run store once Redis forgot it (a new one's has nothing to read there yet).
        self.resumes = conversation_id is not None

    @classmethod
    def from_spec(cls, spec: AgentSpec, *, conversation_id: str | None = None) -> Agent:
        return cls(
            spec.name,
            spec.model,
            spec.system_prompt,
            tools=spec.tools,
            model_settings=spec.model_settings,
            conversation_id=conversation_id,
            description=spec.description,
            output_type=spec.output_type,
        )

    @classmethod
    def from_manifest(
        cls, manifest: AgentsManifest, name: str, *, conversation_id: str | None = None
    ) -> Agent:
        """The agent the manifest declares as ``name`` (``UnknownAgentError`` naming the
        known ones if it declares none)."""
        return cls.from_spec(manifest.agent_spec(name), conversation_id=conversation_id)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model(self) -> str:
        return self.spec.model

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, model={self.model!r})"

    # -- history -------------------------------------------------------------------------

    async def get_history(self, conversation_id: str | None = None) -> list[ChatMessage]:
        """The conversation's messages, oldest first."""
        return await on_io(get_client().load_history(conversation_id or self.conversation_id))

    async def clear_history(self, conversation_id: str | None = None) -> None:
        await on_io(get_client().clear_history(conversation_id or self.conversation_id))

    # -- helpers -------------------------------------------------------------------------

    def resolved_spec(self, model: str | None = None) -> AgentSpec:
        """The spec a run sends (with a per-call model), checked against known providers."""
        spec = self.spec
        if model is not None:
            spec = spec.model_copy(update={"model": model})
        try:
            get_client().manifest.check_model(spec.model)
        except ValueError as exc:
            raise UserError(f"model: {exc}") from None
        except UnknownProviderError as exc:
            raise UnknownProviderError(f"agent {self.name!r}: {exc}", **exc.details) from None
        return spec

    def job_spec(
        self,
        job: Job,
        *,
        include_agent_tools: bool = True,
        model: str | None = None,
        final: bool = True,
    ) -> AgentSpec:
        """The spec of this agent running ``job``: the job's tools (with or without the
        agent's), and, for a run whose answer is the result (``final``), its output type."""
        spec = self.resolved_spec(model)
        check_job(job, spec.model, get_client().manifest)
        tools = list(spec.tools) if include_agent_tools else []
        tools += [t for t in job.tools if t not in tools]
        update: dict[str, Any] = {"tools": tools}
        if final and job.required_return_type is not None:
            update["output_type"] = job.output_spec()
        return spec.model_copy(update=update)

    def to_node(
        self,
        model: str | None = None,
        job: Job | None = None,
        *,
        include_agent_tools: bool = True,
        final: bool = True,
        conversation_id: str | None = None,
    ) -> AgentNode:
        spec = (
            self.job_spec(job, include_agent_tools=include_agent_tools, model=model, final=final)
            if job is not None
            else self.resolved_spec(model)
        )
        return AgentNode(agent=spec, conversation_id=conversation_id or self.conversation_id)

    def _runs(self, prompts: tuple[str, ...]) -> list[str]:
        return [join_prompts((prompt,)) for prompt in prompts]  # one run per prompt

    def _yields(self, event: Event) -> ChatMessage | None:
        return event.message if isinstance(event, RunDone) else None


def check_job(job: Job, model: str, manifest: AgentsManifest) -> None:
    """A job whose requirements the model is known not to meet fails before queueing."""
    info = manifest.model_info(model)
    if job.requires_vision and info.vision is False:
        raise UserError(
            f"job {job.name!r} requires vision, but {model} is marked without it",
            job=job.name,
            model=model,
        )
    if (
        job.min_context_tokens
        and info.context_tokens
        and info.context_tokens < job.min_context_tokens
    ):
        raise UserError(
            f"job {job.name!r} needs {job.min_context_tokens} context tokens, but {model} "
            f"has {info.context_tokens}",
            job=job.name,
            model=model,
        )


def output_class_of(output_type: Any) -> type[BaseModel] | None:
    """The class answers are turned into on this side (None for a bare ``OutputSpec``)."""
    if output_type is None or isinstance(output_type, OutputSpec):
        return None
    if isinstance(output_type, str):
        return import_type(output_type)
    if isinstance(output_type, type) and issubclass(output_type, BaseModel):
        return output_type
    raise UserError(f"output_type must be a pydantic model class, got {output_type!r}")
