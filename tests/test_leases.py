"""Run leases on a real Redis: the fenced end commits while this execution holds the lease,
whatever its own renewals do meanwhile, and never once another execution holds it."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from celery_agents.keys import Keys
from celery_agents.workers.leases import LeaseLost, RunLeases


def _leases(redis: aioredis.Redis, keys: Keys, worker: str = "w") -> RunLeases:
    return RunLeases(redis, keys, worker=worker, every=1.0, record_ttl=60)


async def _end(leases: RunLeases, keys: Keys, run_id: str, *, renew: bool = False) -> None:
    async with leases.fenced(run_id) as pipe:
        if renew:
            await leases.renew()
        pipe.set(keys.run_state(run_id) + ":ended", "1", ex=60)
        await pipe.execute()


async def test_a_renewal_while_the_end_is_written_does_not_abort_it(
    redis_client: aioredis.Redis,
) -> None:
    # The flood found it: a renewal's PEXPIRE landed between the end's WATCH and EXEC, and
    # the run was dropped as if another execution held it.
    keys = Keys(f"leases-{uuid.uuid4().hex[:8]}")
    leases = _leases(redis_client, keys)
    run_id = uuid.uuid4().hex
    claim, _ = await leases.claim(run_id)
    assert claim.verdict == "run"
    await _end(leases, keys, run_id, renew=True)  # renewed as the renewal task would
    assert await redis_client.get(keys.run_state(run_id) + ":ended") == b"1"


async def test_the_end_is_refused_once_another_execution_holds_the_lease(
    redis_client: aioredis.Redis,
) -> None:
    keys = Keys(f"leases-{uuid.uuid4().hex[:8]}")
    mine, theirs = _leases(redis_client, keys, "a"), _leases(redis_client, keys, "b")
    run_id = uuid.uuid4().hex
    assert (await mine.claim(run_id))[0].verdict == "run"
    await redis_client.delete(keys.run_lock(run_id))  # it lapsed while this process stalled
    assert (await theirs.claim(run_id))[0].verdict == "run"
    with pytest.raises(LeaseLost):
        await _end(mine, keys, run_id)
    assert await redis_client.get(keys.run_state(run_id) + ":ended") is None
