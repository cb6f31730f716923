"""Failed runs kept as dead letters: list them, run one again."""

from __future__ import annotations

import uuid
from typing import Any

from .. import deadletters
from ..messages import ChatMessage
from ..tasks.names import RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.tree import TreePayload
from .bridge import on_io
from .client import get_client
from .follow import WAIT_GRACE, wait_message


async def failed_runs(limit: int = 100) -> list[dict[str, Any]]:
    """The newest kept failures: run id, failure time, payload and error."""
    client = get_client()
    return await on_io(deadletters.listing(client.redis, client.keys, limit))


async def retry_failed(run_id: str) -> ChatMessage:
    """Run a kept failure again (as a new run); once it succeeds it is no longer kept."""

    async def go() -> ChatMessage:
        client = get_client()
        record = await deadletters.take(client.redis, client.keys, run_id)
        kind = TreePayload if record.get("task") == RUN_TEAM else RunPayload
        payload = kind.parse(record["payload"]).model_copy(update={"run_id": uuid.uuid4().hex})
        message = await wait_message(await client.start(payload), payload.timeout + WAIT_GRACE)
        await deadletters.forget(client.redis, client.keys, run_id)
        return message

    return await on_io(go())
