"""What the facade refuses before anything is queued: unknown tools, a tenant over budget,
a payload over the size limits, a bad timeout."""

from __future__ import annotations

from typing import TypeVar

from ..errors import UnknownToolError, UserError
from ..tasks.wire import Limits, RunMessage
from ..tenants import check_budget
from ..tools import REGISTRY
from .client import AgentsClient, get_client

P = TypeVar("P", bound=RunMessage)


async def admit(client: AgentsClient, who: str, tools: set[str], tenant: str | None) -> None:
    """Refused here, before anything is queued: tools no one can run, a tenant over budget."""
    await check_tools(client, who, tools)
    if tenant is not None:
        await check_budget(client.redis, client.keys, client.manifest, tenant)


async def check_tools(client: AgentsClient, who: str, wanted: set[str]) -> None:
    """Refuse tool names no one can run: not in the manifest, here, or on a live worker."""
    if not wanted:
        return
    known = set(client.manifest.tools) | REGISTRY.names()
    if wanted - known:
        known |= await client.worker_tools()
    missing = sorted(wanted - known)
    if missing:
        raise UnknownToolError(
            f"{who!r}: unknown tool(s) {', '.join(missing)}: not in the manifest, not "
            "registered here, and not offered by any live worker",
            tools=missing,
        )


def within_limits(payload: P) -> P:
    """``payload``, refused (``InvalidPayloadError``) before sending if it is over the
    configured prompt or message size limits; every run the facade starts passes here."""
    payload.check_limits(Limits.of(get_client().settings))
    return payload


def run_timeout(timeout: float | None) -> float:
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout must be positive, got {timeout}")
    return timeout or get_client().settings.run_timeout
