"""``/v1/usage``: runs, errors, tokens, requests and cost of agent runs, grouped (a tenant
key: its tenant's only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ..facade.stored import usage as stored_usage
from ..store.queries import GROUPS, UsageRow
from .auth import Caller
from .errors import ERROR_RESPONSES, ApiError
from .models import utc

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)


class Usage(BaseModel):
    by: list[str]
    rows: list[UsageRow]


@router.get("", response_model=Usage)
async def usage(
    caller: Caller,
    by: Annotated[
        str, Query(max_length=100, description="Comma-separated: tenant, agent, model, day.")
    ] = "agent",
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Usage:
    groups = [g.strip() for g in by.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ApiError(
            422, "ValidationError", f"by: group by any of {', '.join(GROUPS)} (got {by!r})"
        )
    rows = await stored_usage(
        group_by=groups,
        tenant=caller.scope(tenant),
        since=utc(since),
        until=utc(until),
    )
    return Usage(by=groups, rows=rows)
