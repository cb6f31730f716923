"""The bodies of the Celery tasks, registered by the worker: thin shells that validate the
payload, run the core on the worker's loop, and return JSON. Members of a Team/TeamRun return
records instead of raising, so chord bodies and later chain stages always run.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from ..errors import CeleryAgentsError, InvalidPayloadError, RunError, RunTimeout
from ..events import RunDone, RunFailed, RunStarted
from ..messages import ChatMessage
from ..runstate import write_state
from ..streaming.replay import read_replay
from ..tasks.canvas import build_canvas
from ..tasks.names import COLLECT_TEAM, FINISH_CHAIN, RUN_AGENT, RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.records import MemberRecord
from ..tasks.tree import GroupPayload, TreePayload
from .background import finish_background_run
from .celery_private import AgentTask
from .channel import RunChannel
from .executor import execute_run, run_channel
from .groups import collect_team, finish_chain
from .leases import AlreadyRan, RunningElsewhere
from .runtime import WorkerRuntime, get_runtime
from .store_entries import never_ran

TENANT_RETRY = 0.2  # seconds (plus jitter) before a run at its tenant's cap is tried again
LEASE_SLACK = 0.5  # seconds past another execution's lease before a held run is tried again
BUSY_RETRY = 2.0  # seconds at most before a run another execution holds is tried again

log = logging.getLogger(__name__)


class TenantAtCap(Exception):
    """The run's tenant has all its concurrent runs going: try again a little later."""


def register_tasks(app: Celery) -> None:
    """Register every task on the worker's app."""

    @app.task(name=RUN_AGENT, bind=True, base=AgentTask, max_retries=None)  # type: ignore[untyped-decorator]
    def run_agent(
        self: Task, previous: Any = None, *args: Any, payload: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = get_runtime()
        _refuse_extras(runtime, self.request.id, args, kwargs)
        try:
            return runtime.loop.run(_run_agent(runtime, payload, previous, self.request.id))
        except AlreadyRan as done:  # a redelivery of a run that ended: drop it (acked)
            log.info("%s", done)
            again = runtime.loop.run(_ended_member(runtime, payload, self.request.id))
            if again is None:
                raise Ignore() from None
            return again  # a member hands its record on again: its worker may have died first
        except RunningElsewhere as held:
            # Come back once the other execution's lease lapsed, or once a dead holder could
            # have been taken over (its lease deleted: ``recovery.py``), whichever is sooner.
            wait = min(held.retry_in, BUSY_RETRY)
            log.info("run %s is running elsewhere; trying again in %.1fs", held.run_id, wait)
            raise self.retry(countdown=wait + LEASE_SLACK) from None
        except TenantAtCap as busy:
            # Back to the broker (behind what queued meanwhile), not waiting on a thread that
            # another tenant's run could use; for as long as the run may take, then it ends.
            waited = self.request.retries * TENANT_RETRY
            if waited >= float((payload or {}).get("timeout", 600)):
                error = RunTimeout(
                    f"run {self.request.id} waited {waited:.0f}s for a slot of "
                    f"tenant {busy.args[0]!r}",
                    run_id=self.request.id,
                )
                handed = runtime.loop.run(_gave_up(runtime, payload, self.request.id, error))
                if handed is not None:
                    return handed
                raise error from None
            raise self.retry(countdown=TENANT_RETRY * (1 + random.random())) from None

    @app.task(name=RUN_TEAM, bind=True, base=AgentTask)  # type: ignore[untyped-decorator]
    def run_team(self: Task, *args: Any, payload: Any = None, **kwargs: Any) -> Any:
        """A Team/TeamRun's start: it is replaced by its canvas, whose last task takes this
        task's id (Celery's ``Task.replace``), so the tree's result is stored under its run
        id."""
        runtime = get_runtime()
        _refuse_extras(runtime, self.request.id, args, kwargs)
        tree = runtime.loop.run(_parse(runtime, TreePayload, payload, self.request.id))
        if tree.run_id != self.request.id:
            error = InvalidPayloadError(
                f"invalid team payload: run_id {tree.run_id!r} is not the task id "
                f"{self.request.id!r}"
            )
            runtime.loop.run(_channel(runtime, self.request.id, "?").failed(error))
            raise error
        runtime.loop.run(_started(runtime, tree))
        try:
            canvas = build_canvas(app, tree)
            return self.replace(canvas)
        except Ignore:  # replaced: the canvas is on its way
            raise
        except Exception as exc:  # the broker refused: say so on the run's stream
            raise runtime.loop.run(_start_refused(runtime, tree, exc)) from None

    @app.task(name=COLLECT_TEAM, bind=True, base=AgentTask)  # type: ignore[untyped-decorator]
    def collect_team_task(
        self: Task, results: Any = None, *args: Any, payload: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = get_runtime()
        _refuse_extras(runtime, self.request.id, args, kwargs)
        group = runtime.loop.run(_parse(runtime, GroupPayload, payload, self.request.id))
        records = [MemberRecord.parse(r) for r in results or []]
        return runtime.loop.run(_collected(runtime, group, records))

    @app.task(name=FINISH_CHAIN, bind=True, base=AgentTask)  # type: ignore[untyped-decorator]
    def finish_chain_task(
        self: Task, result: Any = None, *args: Any, payload: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = get_runtime()
        _refuse_extras(runtime, self.request.id, args, kwargs)
        group = runtime.loop.run(_parse(runtime, GroupPayload, payload, self.request.id))
        record = MemberRecord.parse(result, name=group.name)
        return runtime.loop.run(_finished(runtime, group, record))


async def _run_agent(
    runtime: WorkerRuntime, raw: Any, previous: Any, task_id: str
) -> dict[str, Any]:
    payload = await _parse(runtime, RunPayload, raw, task_id)
    if task_id != payload.task_id:
        error = InvalidPayloadError(
            f"invalid run payload: run_id {payload.run_id!r} is not the task id {task_id!r}"
            + (f" (a TeamRun's last stage is {payload.task_id!r})" if payload.finish else "")
        )
        await _channel(runtime, task_id, "?").failed(error)
        raise error
    pool = runtime.tenant_pool(payload.tenant) if payload.tenant else None
    lease = await pool.try_acquire() if pool is not None else None
    if pool is not None and lease is None:
        raise TenantAtCap(payload.tenant or "")
    try:
        return await _run_admitted(runtime, payload, previous)
    finally:
        if pool is not None and lease is not None:
            await pool.release(lease)


async def _run_admitted(
    runtime: WorkerRuntime, payload: RunPayload, previous: Any
) -> dict[str, Any]:
    record = MemberRecord.parse(previous) if previous is not None else None
    if record is not None and record.status != "ok":
        mine = record.skipped()  # an earlier stage failed: carry its failure along
    else:
        try:
            message = await _executed(runtime, payload, record)
        except CeleryAgentsError as exc:
            if not payload.lineage:
                raise
            mine = _outcome(payload, None, exc)
        else:
            if not payload.lineage:
                return message.model_dump(mode="json")
            mine = _outcome(payload, message, None)
    return await _handed_on(runtime, payload, mine)


async def _handed_on(
    runtime: WorkerRuntime, payload: RunPayload, mine: MemberRecord
) -> dict[str, Any]:
    """What a member's task returns: its record, or (the TeamRun's last stage, whose end is
    this task's too) what ending the TeamRun returns."""
    if payload.finish is None:
        return mine.dump()
    return await _finished(runtime, payload.finish, mine)


async def _executed(
    runtime: WorkerRuntime, payload: RunPayload, previous: MemberRecord | None
) -> ChatMessage:
    """The run's message (or its error raised), counted for its background entry if any."""
    try:
        message = await execute_run(runtime, payload, previous=previous)
    except CeleryAgentsError as exc:
        if payload.background:
            await finish_background_run(runtime, payload.background, payload.run_id, None, exc)
        raise
    except AlreadyRan:
        if payload.background:
            await _count_ended(runtime, payload.background, payload.run_id)
        raise
    if payload.background:
        await finish_background_run(runtime, payload.background, payload.run_id, message, None)
    return message


async def _count_ended(runtime: WorkerRuntime, entry_id: str, run_id: str) -> None:
    """Count a background run that ended, from its terminal event, for a delivery of it that
    came back (its worker may have died between its end and the count; counting twice is a
    no-op). Without that event the beat's watchdog counts it."""
    end = await _end_of(runtime, run_id)
    if end is not None:
        await finish_background_run(runtime, entry_id, run_id, *end)


async def _ended_member(runtime: WorkerRuntime, raw: Any, task_id: str) -> dict[str, Any] | None:
    """What a Team/TeamRun member that already ended hands on, for a delivery of it that came
    back: its worker may have died after the member's end, before Celery counted it in its
    chord or sent its chain on (or, for a TeamRun's last stage, before it ended the TeamRun).
    Doing that again is harmless: Celery's Redis backend counts a chord member once, and a
    chain's next step is a run id that runs once. None for a single run, or with no end event
    to rebuild the member's record from."""
    payload = _readable(raw)
    if payload is None or not payload.lineage or payload.task_id != task_id:
        return None
    end = await _end_of(runtime, payload.run_id)
    if end is None:
        return None
    return await _handed_on(runtime, payload, _outcome(payload, *end))


async def _end_of(
    runtime: WorkerRuntime, run_id: str
) -> tuple[ChatMessage | None, CeleryAgentsError | None] | None:
    """A run's end, read back from its terminal event: (message, None) or (None, error)."""
    events = await read_replay(runtime.redis, runtime.keys, run_id)
    last = events[-1] if events else None
    if isinstance(last, RunDone):
        return last.message, None
    if isinstance(last, RunFailed):
        return None, last.exception()
    return None


def _outcome(
    payload: RunPayload, message: ChatMessage | None, error: CeleryAgentsError | None
) -> MemberRecord:
    """A member's record of how it ended: its message, or its error."""
    if error is not None:
        return _member(payload, status="failed", error=error.to_json())
    return _member(payload, status="ok", message=message)


def _member(payload: RunPayload, **fields: Any) -> MemberRecord:
    """This run's record for its Team/TeamRun (its chord body or next chain stage)."""
    return MemberRecord(
        name=payload.agent.name, run_id=payload.run_id, position=payload.position, **fields
    )


def _refuse_extras(
    runtime: WorkerRuntime, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """A crafted message with arguments our tasks do not take is refused on the run's stream
    (Celery alone would fail with a ``TypeError`` nobody waiting would hear of)."""
    if not args and not kwargs:
        return
    what = ", ".join([*(f"argument {i + 2}" for i in range(len(args))), *map(repr, kwargs)])
    error = InvalidPayloadError(f"invalid task message: unexpected {what}", run_id=task_id)
    runtime.loop.run(_channel(runtime, task_id, "?").failed(error))
    raise error


async def _parse(runtime: WorkerRuntime, model: Any, raw: Any, task_id: str) -> Any:
    """Validate a payload; a bad one ends its run's stream with ``InvalidPayloadError``."""
    try:
        return model.parse(raw)
    except InvalidPayloadError as error:
        await _channel(runtime, task_id, "?").failed(error)
        raise


async def _started(runtime: WorkerRuntime, tree: TreePayload) -> None:
    """Record the tree as running, keep its payload while it runs (if it fails, its dead
    letter needs it) and publish its start: one round trip."""
    ttl = runtime.settings.result_ttl
    async with runtime.redis.pipeline(transaction=False) as pipe:
        write_state(pipe, runtime.keys, tree.run_id, "running", ttl, worker=runtime.hostname)
        pipe.set(runtime.keys.tree_payload(tree.run_id), tree.model_dump_json(), ex=ttl)
        started = RunStarted(
            run_id=tree.run_id, agent=tree.node.name, model=tree.node.kind, worker=runtime.hostname
        )
        await runtime.publisher.publish_to([(tree.run_id, started)], after=pipe)


async def _start_refused(runtime: WorkerRuntime, tree: TreePayload, exc: Exception) -> RunError:
    """The error of a tree whose canvas could not be sent, published on its stream."""
    error = RunError(f"could not start team run {tree.run_id}: {exc}")
    await _channel(runtime, tree.run_id, tree.node.name).failed(error)
    return error


async def _gave_up(
    runtime: WorkerRuntime, raw: Any, task_id: str, error: CeleryAgentsError
) -> dict[str, Any] | None:
    """Report ``error`` for a run that will not run where its caller looks: a Team/TeamRun
    member's on its channels and as the failed record it hands on (raised, it would break
    its Team's chord, which then never ends); None for a single run (the task raises it)."""
    payload = _readable(raw)
    async with runtime.redis.pipeline(transaction=False) as pipe:
        if payload is not None:  # it ended without running: on record all the same
            made = lambda: never_ran(payload, error, worker=runtime.hostname)  # noqa: E731
            runtime.record(pipe, made, payload.deliver)
        if payload is None or not payload.lineage:
            await _channel(runtime, task_id, "?").failed(error, after=pipe)
        else:
            await run_channel(runtime, payload).failed(error, after=pipe)
    if payload is not None:
        runtime.deliveries_queued(payload.deliver)
    if payload is None or not payload.lineage:
        if payload is not None and payload.background:  # counted now, not by the watchdog
            await finish_background_run(runtime, payload.background, task_id, None, error)
        return None
    return await _handed_on(runtime, payload, _outcome(payload, None, error))


def _readable(raw: Any) -> RunPayload | None:
    """``raw`` as a run's payload, or None when it is not one (it fails on its own path)."""
    try:
        return RunPayload.parse(raw)
    except Exception:
        return None


def _channel(runtime: WorkerRuntime, run_id: str, name: str) -> RunChannel:
    return RunChannel(runtime.publisher, run_id, name)


async def _collected(
    runtime: WorkerRuntime, group: GroupPayload, records: list[MemberRecord]
) -> dict[str, Any]:
    return await _settle(runtime, group, await collect_team(runtime, group, records))


async def _finished(
    runtime: WorkerRuntime, group: GroupPayload, record: MemberRecord
) -> dict[str, Any]:
    return await _settle(runtime, group, await finish_chain(runtime, group, record))


async def _settle(
    runtime: WorkerRuntime, group: GroupPayload, record: MemberRecord
) -> dict[str, Any]:
    """A member group hands its record on; the root one raises its failure (Flower: FAILURE).
    The root of a background entry's run also counts the run."""
    if group.background:
        message = record.message if record.status == "ok" else None
        error = None if message is not None else record.exception()
        await finish_background_run(runtime, group.background, group.run_id, message, error)
    if group.lineage:
        return record.dump()
    if record.status != "ok" or record.message is None:
        raise record.exception()
    return record.message.model_dump(mode="json")
