"""The end of one run of a background entry: count it, schedule the next, or end the entry.

Counting is idempotent per run id (a redelivered run is counted once), and only the run the
entry has in flight counts. When the entry ends, its terminal event goes on its channel.
"""

from __future__ import annotations

import json
import logging
import time

from ..errors import CeleryAgentsError, RunError
from ..messages import ChatMessage
from ..scheduler.entries import Entries, Entry, end_event, ttl_until
from ..scheduler.policy import day_of
from ..text import as_text
from .runtime import WorkerRuntime

log = logging.getLogger("celery_agents.background")


async def finish_background_run(
    runtime: WorkerRuntime,
    entry_id: str,
    run_id: str,
    message: ChatMessage | None,
    error: CeleryAgentsError | None,
) -> None:
    entries = Entries(runtime.redis, runtime.keys)
    entry = Entry.from_hash(entry_id, await entries.read(entry_id))
    now = time.time()
    due = entry.next_due(now)
    keep = runtime.settings.result_ttl
    failure = error or RunError("the run failed")
    result = message.model_dump_json() if message is not None else json.dumps(failure.to_json())
    outcome = await entries.complete(
        entry_id,
        run_id,
        message is not None,
        result,
        due,
        ttl_until(due, now, entry.timeout, keep),
        keep,
        now=now,
        day=day_of(now, entry.timezone),
        reason="" if message is not None else f"{type(failure).__name__}: {failure.message}",
    )
    outcome = as_text(outcome)
    log.info("background entry=%s run_id=%s outcome=%s", entry_id, run_id, outcome)
    if outcome == "paused":
        log.warning("background entry=%s paused after failing runs", entry_id)
    if outcome == "end":
        await publish_entry_end(runtime, Entry.from_hash(entry_id, await entries.read(entry_id)))


async def publish_entry_end(runtime: WorkerRuntime, entry: Entry) -> None:
    await runtime.publisher.publish(end_event(entry))
