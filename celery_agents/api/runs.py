"""``/v1/runs``: start a run of a manifest's agent or team, read it, follow its events, cancel
it, list what the run store holds. Every run is scoped to the key's tenant."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ..errors import RunError
from ..events import Event, RunDone, RunFailed
from ..facade.client import get_client
from ..facade.handle import RunHandle
from ..facade.manifest import named
from ..facade.stored import run as stored_run
from ..facade.stored import runs as stored_runs
from ..runstate import final_state
from .auth import Caller, Principal
from .errors import ERROR_RESPONSES, ApiError, ErrorBody, not_found
from .models import TERMINAL, CancelAnswer, RunAnswer, RunRequest, RunView, utc
from .sse import event_stream

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERROR_RESPONSES)

RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
State = Literal["succeeded", "failed", "cancelled", "timed_out"]
SSE_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "description": "JSON, or with ?stream=true the run's events (text/event-stream)",
        "content": {"text/event-stream": {}},
    }
}


class RunList(BaseModel):
    runs: list[RunView]


def _tenant_for(body: RunRequest, caller: Principal) -> str:
    if body.tenant is None or body.tenant == caller.tenant:
        return caller.tenant
    if not caller.admin:
        raise ApiError(403, "Forbidden", f"this key runs for tenant {caller.tenant!r} only")
    return body.tenant


@router.post(
    "",
    response_model=RunAnswer,
    status_code=202,
    responses={**SSE_RESPONSE, 429: {"description": "the tenant's budget is spent"}},
)
async def create_run(
    body: RunRequest,
    caller: Caller,
    response: Response,
    wait: Annotated[bool, Query(description="Answer once the run ended.")] = False,
    stream: Annotated[bool, Query(description="Answer with the run's events (SSE).")] = False,
) -> RunAnswer | StreamingResponse:
    """Queue a run; the answer comes at once (202), once it ended (``?wait=true``, 200), or
    as its events (``?stream=true``)."""
    if wait and stream:
        raise ApiError(400, "BadRequest", "wait and stream: ask for one of them")
    tenant = _tenant_for(body, caller)
    target = named(get_client().manifest, body.agent)
    handle = await target.submit(body.prompt, **body.options(tenant))
    if stream:
        return event_stream(handle.events())
    if wait:
        response.status_code = 200
        try:
            return RunAnswer(run_id=handle.run_id, status="succeeded", result=await handle.result())
        except RunError as exc:
            error = ErrorBody(type=type(exc).__name__, message=exc.message)
            return RunAnswer(run_id=handle.run_id, status=final_state(exc), error=error)
    status = await handle.status() if body.idempotency_key else "queued"
    return RunAnswer(run_id=handle.run_id, status=status)


async def visible(run_id: str, caller: Principal) -> RunView:
    """The run as ``caller`` may see it; 404 when it does not exist or is another tenant's."""
    return (await located(run_id, caller))[0]


async def located(run_id: str, caller: Principal) -> tuple[RunView, bool]:
    """``visible``, and whether only the run store still has the run (Redis forgot it)."""
    handle = RunHandle(run_id)
    record = await handle.record()
    if record.state == "unknown":  # Redis forgot it (or never knew it): the store's
        stored = await stored_run(run_id)
        if stored is None or not caller.sees(stored.tenant):
            raise not_found(f"no run {run_id!r}")
        return RunView.of_stored(stored), True
    if not caller.sees(record.tenant):
        raise not_found(f"no run {run_id!r}")
    if record.state not in TERMINAL:
        return RunView.of_record(record), False
    stored = await stored_run(run_id)
    if stored is not None:
        return RunView.of_stored(stored), False
    view = RunView.of_record(record)  # ended, and not in the store yet: its end event has it
    try:
        view.result = message = await handle.result(timeout=5.0)
    except RunError as exc:
        view.error = ErrorBody(type=type(exc).__name__, message=exc.message)
    else:  # its usage and cost too, as the store will have them
        if message.usage is not None:
            view.input_tokens = message.usage.input_tokens
            view.output_tokens = message.usage.output_tokens
        view.cost = message.cost
    return view, False


@router.get("/{run_id}", response_model=RunView)
async def get_run(run_id: RunId, caller: Caller) -> RunView:
    """The run's record and result: from Redis, or from the run store once Redis forgot it."""
    return await visible(run_id, caller)


@router.get("/{run_id}/events", responses=SSE_RESPONSE, response_class=StreamingResponse)
async def run_events(
    run_id: RunId,
    caller: Caller,
    last_event_id: Annotated[
        int | None,
        Header(ge=0, description="The id of the last event seen: the stream goes on after it."),
    ] = None,
    after: Annotated[int | None, Query(ge=0, description="As Last-Event-ID.")] = None,
) -> StreamingResponse:
    """The run's events (SSE), replayed from the start or after ``Last-Event-ID``, then live,
    up to the terminal one. A run Redis has forgotten (past ``result_ttl``) answers with its
    terminal event alone, from the run store, without an ``id``."""
    view, forgotten = await located(run_id, caller)
    if forgotten:  # its events are gone with Redis's keys: its end, from the store
        return event_stream(stored_end(view))
    start = max(last_event_id or 0, after or 0) + 1
    return event_stream(RunHandle(run_id).events(from_seq=start))


async def stored_end(view: RunView) -> AsyncIterator[Event]:
    """The terminal event of a run only the store still has."""
    if view.status == "succeeded" and view.result is not None:
        yield RunDone(run_id=view.run_id, message=view.result)
        return
    error = view.error or ErrorBody(type="RunError", message=view.status)
    yield RunFailed(run_id=view.run_id, error={"type": error.type, "message": error.message})


@router.post("/{run_id}/cancel", response_model=CancelAnswer)
async def cancel_run(run_id: RunId, caller: Caller) -> CancelAnswer:
    """Cancel the run: it will not start, or stops at its next step if it runs. A Team's
    cancel stops every member. 409 once it ended."""
    view = await visible(run_id, caller)
    if view.status in TERMINAL:
        raise ApiError(409, "Conflict", f"run {run_id} already ended ({view.status})")
    await RunHandle(run_id).cancel()
    return CancelAnswer(run_id=run_id, status=view.status)


@router.get("", response_model=RunList)
async def list_runs(
    caller: Caller,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    schedule: Annotated[str | None, Query(max_length=300)] = None,
    state: State | None = None,
    parent: Annotated[str | None, Query(max_length=128)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RunList:
    """The runs that ended, newest first, from the run store (a tenant key: its tenant's)."""
    found = await stored_runs(
        agent=agent,
        team=team,
        tenant=caller.scope(tenant),
        schedule=schedule,
        state=state,
        parent=parent,
        since=utc(since),
        until=utc(until),
        limit=limit,
    )
    return RunList(runs=[RunView.of_stored(r) for r in found])
