"""The console's pages: login, runs (in flight and ended), a run, schedules, a schedule's
history, usage. Each page needs a login (a session cookie); without one it sends you to
``/login``."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ...facade.client import get_client
from ...facade.handle import recent_runs
from ...facade.stored import runs as stored_runs
from ...facade.stored import schedule_history
from ...facade.stored import usage as stored_usage
from ..auth import SESSION_COOKIE, Principal, key_principal, session_principal
from ..errors import ApiError
from ..models import TERMINAL, RunView
from ..runs import visible
from ..schedules import ScheduleView, entries, live_schedules
from ..sessions import SESSION_TTL, close_session, open_session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")


class LoginRequired(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


async def viewer(request: Request) -> Principal:
    token = request.cookies.get(SESSION_COOKIE)
    found = await session_principal(token) if token else None
    if found is None:
        raise LoginRequired(
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
        )
    return found


Viewer = Annotated[Principal, Depends(viewer)]


def to_login(_request: Request, exc: Exception) -> Response:
    path = exc.path if isinstance(exc, LoginRequired) else "/"
    return RedirectResponse(f"/login?next={urllib.parse.quote(path)}", status_code=303)


def page(request: Request, template: str, caller: Principal | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"caller": caller, **context})


def _next(raw: str | None) -> str:
    """Where to go after logging in: a path of this site only."""
    if raw and raw.startswith("/") and not raw.startswith("//"):
        return raw
    return "/"


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", None, next=_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
    key = (form.get("key") or [""])[0].strip()
    goto = _next((form.get("next") or ["/"])[0])
    found = await key_principal(key) if key else None
    if found is None:
        error = "That key is not known, or was revoked." if key else "Paste an API key."
        return page(request, "login.html", None, next=goto, error=error)
    answer = RedirectResponse(goto, status_code=303)
    answer.set_cookie(
        SESSION_COOKIE,
        await open_session(found.key_id),
        max_age=SESSION_TTL,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await close_session(token)
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(SESSION_COOKIE)
    return answer


async def _runs_context(caller: Principal, agent: str | None, state: str | None) -> dict[str, Any]:
    live = [
        RunView.of_record(r)
        for r in await recent_runs(200)
        if r.state not in TERMINAL
        and caller.sees(r.tenant)
        and (agent is None or r.name == agent)
        and (state is None or r.state == state)
    ]
    ended = []
    if state is None or state in TERMINAL:
        is_agent = agent is not None and agent in get_client().manifest.agents
        found = await stored_runs(  # an agent's runs, or a Team's or TeamRun's
            agent=agent if is_agent else None,
            team=None if is_agent else agent,
            tenant=caller.scope(None),
            state=state,
            limit=50,
        )
        ended = [RunView.of_stored(r) for r in found]
    return {"live": live, "ended": ended, "agent": agent, "state": state}


def _targets() -> list[str]:
    manifest = get_client().manifest
    return sorted({*manifest.agents, *manifest.teams})


@dataclass(frozen=True)
class RunFilters:
    agent: str | None
    state: str | None


def run_filters(
    agent: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
) -> RunFilters:
    return RunFilters(agent or None, state or None)  # an empty field filters nothing


Filters = Annotated[RunFilters, Depends(run_filters)]


@router.get("/")
async def runs_page(request: Request, caller: Viewer, filters: Filters) -> HTMLResponse:
    context = await _runs_context(caller, filters.agent, filters.state)
    return page(request, "runs.html", caller, targets=_targets(), states=STATES, **context)


@router.get("/fragments/runs")
async def runs_fragment(request: Request, caller: Viewer, filters: Filters) -> HTMLResponse:
    context = await _runs_context(caller, filters.agent, filters.state)
    return page(request, "runs_tables.html", caller, **context)


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, caller: Viewer) -> HTMLResponse:
    try:
        run = await visible(run_id, caller)
    except ApiError as exc:
        return page(request, "missing.html", caller, message=exc.message)
    members = [RunView.of_stored(m) for m in await stored_runs(parent=run_id, limit=200)]
    return page(request, "run.html", caller, run=run, members=members)


@router.get("/schedules")
async def schedules_page(request: Request, caller: Viewer) -> HTMLResponse:
    shown: list[ScheduleView] = await run_in_threadpool(live_schedules, entries(), caller)
    return page(request, "schedules.html", caller, schedules=shown)


@router.get("/schedules/{name}")
async def schedule_page(request: Request, name: str, caller: Viewer) -> HTMLResponse:
    fires = [f for f in await schedule_history(name, limit=50) if caller.sees(f.tenant)]
    return page(
        request, "schedule.html", caller, name=name, fires=[RunView.of_stored(f) for f in fires]
    )


@router.get("/usage")
async def usage_page(
    request: Request, caller: Viewer, days: Annotated[int, Query(ge=1, le=366)] = 14
) -> HTMLResponse:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    tenant = caller.scope(None)
    charts = {}
    for group in ("tenant", "agent", "day"):
        rows = await stored_usage(group_by=[group], since=since, tenant=tenant)
        charts[group] = rows
    return page(request, "usage.html", caller, charts=charts, days=days)
