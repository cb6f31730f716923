"""``AgentPool``: Celery's thread pool, with agent runs carried on the event loop.

A run (``run_agent`` with no chord, group or callback around it) waits on the model from start
to end: it needs no thread of its own. Its coroutine goes straight onto the worker process's
event loop, and Celery's request callbacks (task-started, the ack, task-succeeded or
task-failed) are called as a pool thread would call them. So a process keeps hundreds of runs
in flight without a thread each, and a run costs no thread hand-offs. A TeamRun stage is such
a run too: when it ends, the next step of its chain is sent as Celery's tracer sends it
(``signature(chain[-1]).apply_async((result,), chain=chain[:-1], ...)``), before the ack.

Everything else goes through the threads as usual: Team and TeamRun tasks, Team members (a
chord needs their stored results), and a run that must wait (tenant at its cap, held by
another execution, already ended), which the traced path retries or drops. A run carried on
the loop stores no Celery result: nobody reads it (the caller has the run's events, the next
stage has it in its message; Flower has the task events, result included).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionInfo
from celery.canvas import signature
from celery.concurrency.thread import ApplyResult
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from kombu.serialization import loads

from ..workers.leases import AlreadyRan, RunningElsewhere
from ..workers.runtime import get_runtime
from .names import RUN_AGENT
from .shells import TenantAtCap, run_single

log = logging.getLogger(__name__)

JSON = "application/json"
# A run that must wait or be dropped: the traced path (retry / Ignore) takes it from here.
_TRACED = (AlreadyRan, RunningElsewhere, TenantAtCap)


class AgentPool(ThreadTaskPool):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: set[concurrent.futures.Future[Any]] = set()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **options: Any,
    ) -> ApplyResult:
        single = _single_run(args or ())
        if single is None or callback is None:
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        task_id, payload, previous, chain, request = single
        runtime = get_runtime()
        if accept_callback is not None:
            accept_callback(os.getpid(), time.monotonic())
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            run_single(runtime, payload, task_id, previous), runtime.loop.loop
        )
        self._direct.add(future)

        def finished(done: concurrent.futures.Future[Any]) -> None:
            self._direct.discard(done)
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            if isinstance(error, _TRACED):
                super(AgentPool, self).on_apply(
                    target, args, kwargs, callback, accept_callback, **options
                )
                return
            if error is None and chain:
                try:
                    self._continue(chain, done.result(), task_id, request)
                except Exception as exc:  # the broker refused the next step
                    error = exc
            if error is not None:
                info = ExceptionInfo((type(error), error, error.__traceback__))
                callback((True, info, time.monotonic() - started))
            else:
                callback((False, done.result(), time.monotonic() - started))

        future.add_done_callback(finished)
        return ApplyResult(future)

    def _continue(
        self, chain: list[Any], result: Any, task_id: str, request: dict[str, Any]
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
        pending = list(self._direct)
        if pending:
            log.info("waiting for %d run(s) in flight to finish", len(pending))
            concurrent.futures.wait(pending)
        super().on_stop()


def _single_run(
    args: tuple[Any, ...],
) -> tuple[str, Any, Any, list[Any] | None, dict[str, Any]] | None:
    """(task id, payload, previous stage's record, chain to continue, request) if the message
    is a ``run_agent`` with nothing around it but, maybe, the rest of its chain."""
    if len(args) != 6:
        return None
    name, task_id, headers, body, content_type, content_encoding = args
    if name != RUN_AGENT or content_type != JSON or headers.get("chord") or headers.get("group"):
        return None
    try:
        decoded = loads(body, content_type, content_encoding, accept={JSON})  # type: ignore[no-untyped-call]
        call_args, call_kwargs, embed = decoded
    except Exception:  # malformed: the traced path reports it
        return None
    embed = embed or {}
    extras = {k: v for k, v in embed.items() if v and k != "chain"}
    if len(call_args) > 1 or set(call_kwargs) != {"payload"} or extras:
        return None
    previous = call_args[0] if call_args else None
    return task_id, call_kwargs["payload"], previous, embed.get("chain") or None, headers
