"""The ``celery_agents.run_agent`` task: validate the payload, run it on the loop, return JSON."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from ..errors import InvalidPayloadError
from ..workers.executor import execute_run, publish_failure
from ..workers.runtime import WorkerRuntime, get_runtime
from .names import RUN_AGENT
from .payload import RunPayload


def register_run_agent(app: Celery) -> Task:
    @app.task(name=RUN_AGENT, bind=True)  # type: ignore[untyped-decorator]
    def run_agent(self: Task, payload: Any) -> dict[str, Any]:
        runtime = get_runtime()
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        return runtime.loop.run(_run(runtime, payload, self.request.id, 2 if redelivered else 1))

    return run_agent


async def _run(runtime: WorkerRuntime, raw: Any, task_id: str, attempt: int) -> dict[str, Any]:
    try:
        payload = RunPayload.parse(raw)
        if payload.run_id != task_id:
            raise InvalidPayloadError(
                f"invalid run payload: run_id {payload.run_id!r} is not the task id {task_id!r}"
            )
    except InvalidPayloadError as error:
        await publish_failure(runtime, task_id, error)
        raise
    message = await execute_run(runtime, payload, attempt=attempt)
    return message.model_dump(mode="json")
