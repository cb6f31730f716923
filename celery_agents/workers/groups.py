"""The ends of Teams and TeamRuns: collect a Team's member records, finish a TeamRun.

Both publish the group's terminal event after every member's (they run after them), with the
tokens and cost its members rolled up, and hand a record to whatever encloses them.
"""

from __future__ import annotations

import json

from ..deadletters import keep, worth_keeping
from ..errors import CeleryAgentsError, RunCancelled, StageError, TeamRunError
from ..messages import ChatMessage
from ..runstate import final_state, write_state
from ..tasks.names import RUN_TEAM
from ..tasks.records import MemberRecord
from ..tasks.tree import GroupPayload
from .channel import RunChannel
from .runtime import WorkerRuntime
from .store_entries import GroupFacts, group_entry


def _channel(runtime: WorkerRuntime, group: GroupPayload) -> RunChannel:
    return RunChannel(
        runtime.publisher, group.run_id, group.name, tuple(group.lineage), tuple(group.position)
    )


def _record(group: GroupPayload, **fields: object) -> MemberRecord:
    return MemberRecord.model_validate(
        {"name": group.name, "run_id": group.run_id, "position": group.position, **fields}
    )


async def collect_team(
    runtime: WorkerRuntime, group: GroupPayload, records: list[MemberRecord]
) -> MemberRecord:
    """One message for the Team: successful members' contents in member order, failures in
    ``metadata["errors"]``; ``TeamRunError`` only if every member failed."""
    if records and all(r.status == "skipped" for r in records):
        return records[0]  # an earlier stage failed: nothing ran here
    channel = _channel(runtime, group)
    if any(r.status != "ok" for r in records) and await _cancelled(runtime, group):
        return await _end_cancelled(runtime, group, channel)
    ok = [r for r in records if r.status == "ok" and r.message is not None]
    errors = _errors_by_member(records)
    if not ok:
        detail = "; ".join(f"{name}: {message}" for name, message in errors.items())
        error = TeamRunError(
            f"every member of team {group.name!r} failed: {detail}", team=group.name, errors=errors
        )
        await _fail(runtime, group, channel, error)
        return _record(group, status="failed", error=error.to_json())
    messages = [r.message for r in ok if r.message is not None]
    facts = await _facts(runtime, group)
    usage, cost = facts.usage, facts.cost
    message = ChatMessage(
        content=[m.content for m in messages],
        name=group.name,
        run_id=group.run_id,
        conversation_id=None,
        usage=usage,
        cost=cost,
        forwarded_from=group.forwarded_from,
        associated_messages=messages,
        metadata={"errors": errors, "members": [r.name for r in ok]},
    )
    return await _succeed(runtime, group, channel, message, facts)


async def finish_chain(
    runtime: WorkerRuntime, group: GroupPayload, record: MemberRecord
) -> MemberRecord:
    """The TeamRun's result: its last stage's message with the chain's usage and cost, or a
    ``StageError`` naming the stage that failed."""
    channel = _channel(runtime, group)
    if record.status != "ok" and await _cancelled(runtime, group):
        return await _end_cancelled(runtime, group, channel)
    if record.status == "ok" and record.message is not None:
        facts = await _facts(runtime, group)
        message = record.message.model_copy(update={"usage": facts.usage, "cost": facts.cost})
        return await _succeed(runtime, group, channel, message, facts)
    if record.status == "skipped" and not record.failed_inside(group.position):
        return record  # the TeamRun's own input had failed: pass the failure along
    cause = record.exception()
    error = StageError(
        f"stage {record.name!r} of team run {group.name!r} failed: {cause.message}",
        stage=record.name,
        team_run=group.name,
        cause=cause.to_json(),
    )
    await _fail(runtime, group, channel, error)
    return _record(group, status="failed", error=error.to_json())


async def _facts(runtime: WorkerRuntime, group: GroupPayload) -> GroupFacts:
    """What Redis holds of the group as it ends, in one round trip."""
    if runtime.store is None and not group.deliver:  # the usage alone: the rest is a record
        return GroupFacts.parse(
            {}, await runtime.redis.hgetall(runtime.keys.run_usage(group.run_id)), None
        )
    async with runtime.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(runtime.keys.run_state(group.run_id))
        pipe.hgetall(runtime.keys.run_usage(group.run_id))
        pipe.get(runtime.keys.tree_payload(group.run_id))
        state, usage, tree = await pipe.execute()
    return GroupFacts.parse(state, usage, tree)


async def _succeed(
    runtime: WorkerRuntime,
    group: GroupPayload,
    channel: RunChannel,
    message: ChatMessage,
    facts: GroupFacts,
) -> MemberRecord:
    """The group's record (in Redis and for the store), then its result event, in one round
    trip."""
    async with runtime.redis.pipeline(transaction=False) as pipe:
        write_state(pipe, runtime.keys, group.run_id, "succeeded", runtime.settings.result_ttl)
        runtime.record(
            pipe,
            lambda: group_entry(group, facts, worker=runtime.hostname, message=message),
            group.deliver,
        )
        await channel.done(message, after=pipe)
    runtime.deliveries_queued(group.deliver)
    return _record(group, status="ok", message=message)


async def _publish_failure(
    runtime: WorkerRuntime, group: GroupPayload, channel: RunChannel, error: CeleryAgentsError
) -> None:
    """The group's record (in Redis and for the store), then its failure event, in one round
    trip."""
    wanted = runtime.store is not None or group.deliver
    facts = await _facts(runtime, group) if wanted else None
    async with runtime.redis.pipeline(transaction=False) as pipe:
        state = final_state(error)
        write_state(pipe, runtime.keys, group.run_id, state, runtime.settings.result_ttl)
        if facts is not None:
            runtime.record(
                pipe,
                lambda: group_entry(group, facts, worker=runtime.hostname, error=error),
                group.deliver,
            )
        await channel.failed(error, after=pipe)
    runtime.deliveries_queued(group.deliver)


async def _cancelled(runtime: WorkerRuntime, group: GroupPayload) -> bool:
    """Whether the group, or a group it belongs to, was cancelled."""
    ids = [group.run_id, *(a.run_id for a in group.lineage)]
    return bool(await runtime.redis.exists(*(runtime.keys.run_cancel(r) for r in ids)))


async def _end_cancelled(
    runtime: WorkerRuntime, group: GroupPayload, channel: RunChannel
) -> MemberRecord:
    """A cancelled group ends cancelled (not as a failure of the members it stopped)."""
    error = RunCancelled(f"{group.name!r} run {group.run_id} was cancelled", run_id=group.run_id)
    await _publish_failure(runtime, group, channel, error)
    return _record(group, status="failed", error=error.to_json())


def _errors_by_member(records: list[MemberRecord]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for record in records:
        if record.status == "ok":
            continue
        name = record.name
        while name in errors:  # a Team may hold the same agent twice
            name += "'"
        errors[name] = record.exception().message
    return errors


async def _fail(
    runtime: WorkerRuntime, group: GroupPayload, channel: RunChannel, error: CeleryAgentsError
) -> None:
    """Publish the group's failure; a failed root is kept as a dead letter first."""
    if not group.lineage and worth_keeping(error):
        raw = await runtime.redis.get(runtime.keys.tree_payload(group.run_id))
        if raw is not None:
            await keep(runtime.redis, runtime.keys, group.run_id, RUN_TEAM, json.loads(raw), error)
    await _publish_failure(runtime, group, channel, error)
