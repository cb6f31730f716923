"""``RunChannel``: where the events of one run go.

A run's events go on its own channel, and on each enclosing Team/TeamRun's channel tagged with
the run's name and its position below that ancestor, so one subscription at the top sees the
whole tree. A member's end becomes ``message`` / ``member.failed`` up there (only the run's own
channel carries its terminal event), and its tokens and cost are added to each ancestor's
usage hash. All channels of an event cost one round trip, however deep the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio.client import Pipeline

from ..errors import CeleryAgentsError
from ..events import MemberFailed, MessageEvent, RunDone, RunFailed, _Event
from ..keys import Keys
from ..messages import ChatMessage, Usage
from ..streaming.outbox import Outbox
from ..streaming.publisher import EventPublisher
from ..tasks.tree import Ancestor


@dataclass(frozen=True)
class RunChannel:
    publisher: EventPublisher
    run_id: str
    name: str
    lineage: tuple[Ancestor, ...] = ()
    position: tuple[int, ...] = ()
    # With an outbox, progress events do not wait for Redis (streaming/outbox.py); the
    # terminal event still does, after them. Without one every event is awaited.
    outbox: Outbox | None = None

    async def emit(self, event: _Event) -> None:
        await self._publish(event, event, result=False)

    async def flush(self) -> None:
        """Return once every event emitted so far is published."""
        if self.outbox is not None:
            await self.outbox.flush()

    async def done(self, message: ChatMessage, *, after: Pipeline | None = None) -> None:
        """The run's result; ``after``'s commands go first, in the same round trip."""
        await self._publish(
            RunDone(run_id=self.run_id, message=message),
            MessageEvent(run_id=self.run_id, message=message),
            result=True,
            after=after,
        )

    async def failed(self, error: CeleryAgentsError, *, after: Pipeline | None = None) -> None:
        await self._publish(
            RunFailed(run_id=self.run_id, error=error.to_json()),
            MemberFailed(run_id=self.run_id, error=error.to_json()),
            result=True,
            after=after,
        )

    async def _publish(
        self,
        own: _Event,
        upward: _Event,
        *,
        result: bool,
        after: Pipeline | None = None,
    ) -> None:
        targets: list[tuple[str, _Event]] = [(self.run_id, own)]
        for depth, ancestor in enumerate(self.lineage):
            if ancestor.results_only and not result:
                continue
            tagged = upward.model_copy(
                update={"member": self.name, "position": list(self.position[depth:])}
            )
            targets.append((ancestor.run_id, tagged))
        if self.outbox is None:
            await self.publisher.publish_to(targets, after=after)
        elif result:
            await self.outbox.close(targets, after=after)
        else:
            self.outbox.put(targets)

    def ancestor(self, run_id: str) -> RunChannel:
        """The channel of the enclosing Team/TeamRun ``run_id`` (to publish as that node)."""
        depth = next(i for i, a in enumerate(self.lineage) if a.run_id == run_id)
        return RunChannel(
            self.publisher,
            run_id,
            self.lineage[depth].name,
            self.lineage[:depth],
            self.position[:depth],
            self.outbox,  # one order for everything this run publishes
        )


def add_usage(
    pipe: Pipeline,
    keys: Keys,
    lineage: tuple[Ancestor, ...],
    usage: Usage,
    cost: float | None,
    *,
    ttl: int,
    requests: int = 0,
) -> None:
    """Queue adding a member's tokens, requests and cost to every enclosing Team/TeamRun's
    usage hash."""
    for ancestor in lineage:
        key = keys.run_usage(ancestor.run_id)
        pipe.hincrby(key, "input_tokens", usage.input_tokens)
        pipe.hincrby(key, "output_tokens", usage.output_tokens)
        if requests:
            pipe.hincrby(key, "requests", requests)
        if cost is not None:
            pipe.hincrbyfloat(key, "cost", cost)
        pipe.expire(key, ttl)
