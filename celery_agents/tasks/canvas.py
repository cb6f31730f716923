"""The canvas of a Team/TeamRun tree: Team -> chord(group(members), collect_team), TeamRun ->
chain(stages..., finish_chain). Nested nodes compose; no task ever waits on another's result.
A TeamRun whose last stage is an agent has no ``finish_chain`` task: that stage ends it.

Every task's id is the run id of the run it ends: a member's own, and for the task that ends
a Team or TeamRun (its ``collect_team``, ``finish_chain`` or last stage), the Team's or
TeamRun's. So ``AsyncResult(run_id)`` is the result of any run of the tree.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from .names import COLLECT_TEAM, FINISH_CHAIN, RUN_AGENT
from .payload import RunPayload
from .tree import AgentNode, Ancestor, ChainNode, GroupPayload, Handoff, TeamNode, TreePayload


def build_canvas(app: Celery, tree: TreePayload) -> Signature:
    """The whole tree as one canvas; the root node's run id is ``tree.run_id``."""
    root = _Place(tuple(tree.lineage), tuple(tree.position), (), ())
    return _Builder(app, tree).node(tree.node, tree.run_id, root, None)


@dataclass(frozen=True)
class _Place:
    """Where a node sits: its Teams/TeamRuns above, its path, the shared prompts that reach
    it, and the TeamRun stages before it (its ``forwarded_from``)."""

    lineage: tuple[Ancestor, ...]
    position: tuple[int, ...]
    prefixes: tuple[str, ...]
    forwarded: tuple[str, ...]


class _Builder:
    def __init__(self, app: Celery, tree: TreePayload) -> None:
        self.app = app
        self.tree = tree
        self.sent_at = time.time()  # the tree starts now: its time with it
        self.deadline = self.sent_at + tree.timeout

    def node(
        self,
        node: AgentNode | TeamNode | ChainNode,
        run_id: str,
        place: _Place,
        handoff: Handoff | None,
        *,
        finish: GroupPayload | None = None,
    ) -> Signature:
        if isinstance(node, AgentNode):
            return self.agent(node, run_id, place, handoff, finish)
        me = Ancestor(run_id=run_id, name=node.name)
        prefixes = (*place.prefixes, node.shared_prompt) if node.shared_prompt else place.prefixes
        end = GroupPayload(
            run_id=run_id,
            name=node.name,
            kind=node.kind,
            lineage=list(place.lineage),
            position=list(place.position),
            forwarded_from=list(place.forwarded),
            background=self.tree.background if run_id == self.tree.run_id else None,
            tenant=self.tree.tenant,
            deliver=self.tree.deliver if run_id == self.tree.run_id else [],
        )
        # A TeamRun whose last stage is an agent ends in that stage's task: one hop less.
        folded = isinstance(node, ChainNode) and isinstance(node.members[-1], AgentNode)
        members = []
        for index, member in enumerate(node.members):
            forwarded = place.forwarded
            if isinstance(node, ChainNode) and index > 0:
                member_handoff: Handoff | None = Handoff(chain=me, target=member.name)
                forwarded = (*forwarded, *(m.name for m in node.members[:index]))
            else:
                member_handoff = handoff if index == 0 else None
            below = _Place((*place.lineage, me), (*place.position, index), prefixes, forwarded)
            last = index == len(node.members) - 1
            signature = self.node(
                member, _new_id(), below, member_handoff, finish=end if folded and last else None
            )
            members.append(signature)
        ending = end.model_dump(mode="json")
        if isinstance(node, TeamNode):
            return chord(
                group(members), self.task(COLLECT_TEAM, ending, run_id, {"team": node.name})
            )
        if folded:
            return chain(*members)
        return chain(*members, self.task(FINISH_CHAIN, ending, run_id, {"team_run": node.name}))

    def agent(
        self,
        node: AgentNode,
        run_id: str,
        place: _Place,
        handoff: Handoff | None,
        finish: GroupPayload | None,
    ) -> Signature:
        payload = RunPayload(
            run_id=run_id,
            agent=node.agent,
            prompt=self.tree.prompt,
            conversation_id=node.conversation_id,
            store_history=self.tree.store_history,
            timeout=self.tree.timeout,
            lineage=list(place.lineage),
            position=list(place.position),
            prefixes=list(place.prefixes),
            handoff=handoff,
            forwarded_from=list(place.forwarded),
            tenant=self.tree.tenant,
            finish=finish,
            deadline=self.deadline,
            queued_at=self.sent_at,
        )
        parent = place.lineage[-1].run_id if place.lineage else None
        return self.task(
            RUN_AGENT,
            payload.model_dump(mode="json"),
            payload.task_id,
            {**payload.summary(), "parent": parent},
        )

    def task(
        self, name: str, payload: dict[str, object], task_id: str, summary: dict[str, object]
    ) -> Signature:
        return self.app.signature(
            name,
            kwargs={"payload": payload},
            task_id=task_id,
            kwargsrepr=json.dumps({"run_id": task_id, **summary}),
            argsrepr="()",
            **self.tree.route.options(self.app.conf.broker_url),
        )


def _new_id() -> str:
    return uuid.uuid4().hex
