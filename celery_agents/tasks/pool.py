"""``AgentPool``: Celery's thread pool, with agent runs carried on the event loop.

A run (``run_agent`` with no chord, group or callback around it) waits on the model from start
to end: it needs no thread of its own. Its coroutine goes straight onto the worker process's
event loop, and Celery's request callbacks (task-started, the ack, task-succeeded or
task-failed) are called as a pool thread would call them, but on the consumer's thread
(``HubCalls``: it owns the broker connection, and must wake to fetch when an ack frees room).
So a process keeps hundreds of runs in flight without a thread each.

A TeamRun stage is such a run too: when it ends, the next step of its chain is sent as
Celery's tracer sends it (``signature(chain[-1]).apply_async((result,), chain=chain[:-1],
...)``), before the ack. On a broker that is the worker's Redis, Celery builds that message
and the loop writes it (``DirectSend.capture``); so does a TeamRun's start. Elsewhere the
consumer's thread publishes it.

Everything else goes through the threads as usual: Team tasks and their members (a chord
needs stored results and talks to the result backend), and a run that must wait (tenant at
its cap, held by another execution, already ended), which the traced path retries or drops.
A run carried on the loop stores no Celery result: nobody reads it (the caller has the run's
events, the next stage has it in its message; Flower has the task events, result included).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Literal

from billiard.einfo import ExceptionInfo
from celery.canvas import signature
from celery.concurrency.thread import ApplyResult
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from kombu.serialization import loads
from redis.asyncio.client import Pipeline

from ..workers.hub_calls import HubCalls
from ..workers.leases import AlreadyRan, RunningElsewhere
from ..workers.runtime import WorkerRuntime, get_runtime
from .envelope import DirectSend, Push, queue_pushes, write_pushes
from .names import RUN_AGENT, RUN_TEAM
from .shells import TenantAtCap, run_single, start_team_run

log = logging.getLogger(__name__)

JSON = "application/json"
# A run that must wait or be dropped: the traced path (retry / Ignore) takes it from here.
_TRACED = (AlreadyRan, RunningElsewhere, TenantAtCap)


class AgentPool(ThreadTaskPool):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop runs whose ending is not handed to ``_hub_calls`` yet (a future's waiters
        # wake before its done callbacks run: waiting on the futures is not enough).
        self._unended = 0
        self._ended = threading.Condition()
        self._hub_calls = HubCalls()
        self._sender: DirectSend | Literal[False] | None = None

    def register_with_event_loop(self, loop: Any) -> None:
        """A run's ending (ack, events, next chain step) goes to the consumer's hub thread."""
        super().register_with_event_loop(loop)
        self._hub_calls.attach(loop)

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **options: Any,
    ) -> ApplyResult:
        plan = self._plan(args or ()) if callback is not None else None
        if plan is None or callback is None:
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        run, task_id, request, chain = plan
        runtime = get_runtime()
        if accept_callback is not None:
            accept_callback(os.getpid(), time.monotonic())
        started = time.monotonic()
        with self._ended:
            self._unended += 1
        try:
            future = asyncio.run_coroutine_threadsafe(run, runtime.loop.loop)
        except BaseException:
            self._handed_over()
            raise

        def finished(done: concurrent.futures.Future[Any]) -> None:
            try:
                self._hub_calls.call(lambda: end(done))
            finally:
                self._handed_over()

        def end(done: concurrent.futures.Future[Any]) -> None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            if isinstance(error, _TRACED) or (error is None and done.result() is None):
                # Accepted already: the thread does not accept it again.
                super(AgentPool, self).on_apply(target, args, kwargs, callback, None, **options)
                return
            if error is None and chain:
                try:
                    self._continue(chain, task_id, request, done.result())
                except Exception as exc:  # the broker refused the next step
                    error = exc
            if error is not None:
                info = ExceptionInfo((type(error), error, error.__traceback__))
                callback((True, info, time.monotonic() - started))
            else:
                callback((False, done.result(), time.monotonic() - started))

        future.add_done_callback(finished)
        return ApplyResult(future)

    def _handed_over(self) -> None:
        """One loop run's ending is with ``_hub_calls`` now (or will never be)."""
        with self._ended:
            self._unended -= 1
            self._ended.notify_all()

    def _plan(
        self, args: tuple[Any, ...]
    ) -> tuple[Coroutine[Any, Any, Any], str, dict[str, Any], list[Any] | None] | None:
        """(the coroutine, task id, request, chain left to continue from the consumer's
        thread) when the message can be carried on the loop, else None (a pool thread). The
        coroutine returning None also sends it to a thread."""
        single = _single_run(args)
        if single is not None:
            task_id, payload, previous, chain, request = single
            runtime = get_runtime()
            direct = self._direct_send(runtime) if chain else None
            if chain and direct is not None:
                step = _NextStep(direct, partial(self._continue, chain, task_id, request))
                run = run_single(runtime, payload, task_id, previous, step)
                return self._stage(runtime, step, run), task_id, request, None
            return run_single(runtime, payload, task_id, previous), task_id, request, chain
        team = _team_run_start(args)
        if team is not None:
            runtime = get_runtime()
            direct = self._direct_send(runtime)
            if direct is not None:
                task_id, payload, request = team
                return start_team_run(runtime, direct, payload, task_id), task_id, request, None
        return None

    def _direct_send(self, runtime: WorkerRuntime) -> DirectSend | None:
        """How this worker writes a chain's next step itself (its broker is its Redis)."""
        if self._sender is None:
            self._sender = DirectSend.for_settings(self.app, runtime.settings) or False
        return self._sender or None

    async def _stage(
        self, runtime: WorkerRuntime, step: _NextStep, run: Coroutine[Any, Any, Any]
    ) -> Any:
        """A TeamRun stage, then its chain's next step, unless the stage's end sent it (in
        its last round trip, as it does when it ran its model): Celery builds the message,
        the loop writes it (no blocking publish, no thread hop). The queue needs no
        declaring: this worker took the stage from it, so it consumes it."""
        result = await run
        if not step.queued:
            await write_pushes(runtime.redis, step.pushes(result))
        return result

    def _continue(
        self, chain: list[Any], task_id: str, request: dict[str, Any], result: Any
    ) -> None:
        """Send the next step of the chain this run is in, as Celery's tracer does."""
        delivery = request.get("delivery_info") or {}
        signature(chain[-1], app=self.app).apply_async(
            (result,),
            chain=chain[:-1],
            parent_id=task_id,
            root_id=request.get("root_id") or task_id,
            priority=delivery.get("priority"),
        )

    def on_stop(self) -> None:
        """Warm shutdown: the runs on the loop finish first, like those on threads."""
        with self._ended:
            if self._unended:
                log.info("waiting for %d run(s) in flight to finish", self._unended)
            self._ended.wait_for(lambda: not self._unended)
        self._hub_calls.detach()  # their endings run here if the hub has stopped
        super().on_stop()


class _NextStep:
    """The next step of a stage's chain, as writes made from the loop (``shells.NextStep``)."""

    def __init__(self, direct: DirectSend, send: Callable[[Any], None]) -> None:
        self._direct = direct
        self._send = send
        self.queued = False

    def pushes(self, result: Any) -> list[Push]:
        return self._direct.capture(lambda: self._send(result))

    def queue(self, pipe: Pipeline, result: dict[str, Any]) -> None:
        queue_pushes(pipe, self.pushes(result))
        self.queued = True


def _decoded(args: tuple[Any, ...], name: str) -> tuple[str, dict[str, Any], Any] | None:
    """(task id, headers, (args, kwargs, embed)) of a JSON ``name`` message outside any chord
    or group; None otherwise (or when it does not decode: the traced path reports that)."""
    if len(args) != 6:
        return None
    task, task_id, headers, body, content_type, content_encoding = args
    if task != name or content_type != JSON or headers.get("chord") or headers.get("group"):
        return None
    try:
        decoded = loads(body, content_type, content_encoding, accept={JSON})  # type: ignore[no-untyped-call]
        call_args, call_kwargs, embed = decoded
    except Exception:
        return None
    # Its shape was checked when Celery made its request (``AgentRequest``).
    return task_id, headers, (call_args, call_kwargs, embed or {})


def _team_run_start(args: tuple[Any, ...]) -> tuple[str, Any, dict[str, Any]] | None:
    """(task id, payload, request) if the message starts a TeamRun (a tree whose root is a
    chain), with nothing around it."""
    decoded = _decoded(args, RUN_TEAM)
    if decoded is None:
        return None
    task_id, headers, (call_args, call_kwargs, embed) = decoded
    payload = call_kwargs.get("payload")
    if call_args or set(call_kwargs) != {"payload"} or any(embed.values()):
        return None
    node = payload.get("node") if isinstance(payload, dict) else None
    if not isinstance(node, dict) or node.get("kind") != "chain":
        return None
    return task_id, payload, headers


def _single_run(
    args: tuple[Any, ...],
) -> tuple[str, Any, Any, list[Any] | None, dict[str, Any]] | None:
    """(task id, payload, previous stage's record, chain to continue, request) if the message
    is a ``run_agent`` with nothing around it but, maybe, the rest of its chain."""
    decoded = _decoded(args, RUN_AGENT)
    if decoded is None:
        return None
    task_id, headers, (call_args, call_kwargs, embed) = decoded
    extras = {k: v for k, v in embed.items() if v and k != "chain"}
    if len(call_args) > 1 or set(call_kwargs) != {"payload"} or extras:
        return None
    previous = call_args[0] if call_args else None
    return task_id, call_kwargs["payload"], previous, embed.get("chain") or None, headers
