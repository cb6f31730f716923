"""Deliveries survive their worker: a worker killed (SIGKILL) while its runs' webhooks wait
for a receiver that is down leaves them in Redis, and another worker delivers each once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from celery_agents import Agent, Settings
from celery_agents.embedded.worker import WorkerProcess
from celery_agents.keys import Keys
from celery_agents.scheduler.deliverer import LEASE
from celery_agents.scheduler.delivery import delivery_id
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_delivered_runs import SECRET, SIGNING

pytestmark = pytest.mark.faults


async def test_kill_9_with_deliveries_pending_another_worker_delivers_each_once(
    private_worker: Callable[..., WorkerProcess], agents: Settings, fault_report: Any
) -> None:
    runs = 5
    # Keys of its own: the session's worker, which has no HOOK_SECRET, would take these
    # deliveries too, fail them for want of it, and push their backoff past the deadline.
    prefix = f"deliveries-{uuid.uuid4().hex[:8]}"
    doomed = private_worker(extra_env=SIGNING, key_prefix=prefix)
    receiver = WebhookReceiver(secret=SECRET)  # not listening yet: every attempt fails
    target = [{"webhook": receiver.url, "secret_env": "HOOK_SECRET"}]
    agent = Agent("reporter", "test:echo")
    messages = [await agent.run(f"report {i}", deliver=target) for i in range(runs)]
    ids = [delivery_id(m.run_id, 0) for m in messages]
    client = redis.Redis.from_url(agents.redis_url)
    keys = Keys(prefix)
    try:
        deadline = time.monotonic() + 20
        while not all(int(client.hget(keys.delivery(i), "attempts") or 0) >= 1 for i in ids):
            assert time.monotonic() < deadline, "the deliveries were never attempted"
            await asyncio.sleep(0.05)
        doomed.kill()  # SIGKILL: its deliveries wait in Redis
        # Listening before the survivor starts: each delivery's next try (its backoff grew
        # while nothing listened, up to ~30 s) is the first to succeed.
        receiver.start()
        survivor = private_worker(extra_env=SIGNING, key_prefix=prefix)
        # A delivery the doomed worker had claimed when it died waits out its claim's lease.
        try:
            accepted = await receiver.wait_accepted(runs, timeout=LEASE + 30)
        except AssertionError as exc:
            pending = client.zrange(keys.deliveries_pending(), 0, -1, withscores=True)
            kept = {i: client.hgetall(keys.delivery(i)) for i in ids}
            said = [
                line
                for worker in (doomed, survivor)
                if worker.log_path.exists()
                for line in worker.log_path.read_text(errors="replace").splitlines()
                if "deliver" in line
            ]
            raise AssertionError(
                f"{exc}\nnow {time.time()}, pending {pending}, {kept}\n" + "\n".join(said)
            ) from None
        deadline = time.monotonic() + 10
        while client.zcard(keys.deliveries_pending()):  # every delivery has been settled
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        states = [client.hget(keys.delivery(i), "state") for i in ids]
        delivered = sorted(r.headers["webhook-id"] for r in receiver.accepted)
        fault_report.record(
            "worker kill -9 with 5 webhooks pending, receiver down",
            injected=1,
            started=runs,
            completed=len(set(delivered)),
            lost=runs - len(set(delivered)),
            duplicated=len(delivered) - len(set(delivered)),
        )
        assert sorted(m.run_id for m in messages) == delivered
        assert len(accepted) == runs and states == [b"delivered"] * runs
    finally:
        client.close()
        receiver.close()
