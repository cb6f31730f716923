"""The manifest's ``schedules:`` as background entries: recurring analyses without a client.

Entry ids are ``schedule:<name>``. At beat start an entry whose definition changed (or that
ended) is made anew; one that is unchanged keeps its counters, pause state and due time (its
keys never expire); one whose schedule left the manifest is cancelled. One removed by hand
(``schedules remove``) stays removed until its manifest entry changes.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config.manifest import AgentsManifest, ScheduleSpec
from ..config.settings import Settings
from ..tasks.names import RUN_AGENT, RUN_TEAM
from ..tasks.payload import RunPayload
from ..tasks.tree import AgentNode, ChainNode, TeamNode, TreePayload
from ..text import as_text
from .entries import MANIFEST_PREFIX, Entries, Entry, EntryTemplate, ttl_until
from .policy import Grid, Policy

log = logging.getLogger("celery_agents.beat")
PREFIX = MANIFEST_PREFIX


def template_for(
    name: str, spec: ScheduleSpec, manifest: AgentsManifest, settings: Settings
) -> EntryTemplate:
    """The entry a manifest schedule stands for (its runs keep no conversation history)."""
    timeout = settings.run_timeout
    if spec.agent is not None:
        task = RUN_AGENT
        payload: dict[str, Any] = RunPayload(
            run_id="pending",
            agent=manifest.agent_spec(spec.agent),
            prompt=spec.prompt,
            conversation_id=f"{PREFIX}{name}",
            store_history=False,
            timeout=timeout,
            deliver=spec.deliver,
        ).model_dump(mode="json")
    else:
        task = RUN_TEAM
        payload = TreePayload(
            run_id="pending",
            node=_team_node(manifest, spec.team or "", name),
            prompt=spec.prompt,
            store_history=False,
            timeout=timeout,
            deliver=spec.deliver,
        ).model_dump(mode="json")
    policy = Policy(
        overlap=spec.overlap,
        catchup_window=spec.catchup_window,
        pause_after_failures=spec.pause_after_failures,
        jitter=spec.jitter,
        start_at=spec.epoch(spec.start_at),
        end_at=spec.epoch(spec.end_at),
        tokens_per_day=spec.budget.tokens_per_day if spec.budget else None,
    )
    return EntryTemplate(
        name=name,
        task=task,
        payload=payload,
        interval=spec.every,
        cron=spec.cron,
        timezone=spec.timezone,
        max_count=spec.max_count,
        timeout=timeout,
        policy=policy,
        persist=True,
    )


def sync_manifest_schedules(
    entries: Entries, manifest: AgentsManifest, settings: Settings, now: float
) -> None:
    wanted = {
        f"{PREFIX}{name}": template_for(name, spec, manifest, settings)
        for name, spec in manifest.schedules.items()
    }
    keep = settings.result_ttl
    client, keys = entries.client, entries.keys
    removed = {as_text(k): as_text(v) for k, v in client.hgetall(keys.schedules_removed()).items()}
    for entry_id, template in wanted.items():
        fingerprint = template.fingerprint()
        if removed.get(entry_id) == fingerprint:
            log.info("schedule %s was removed by hand: it stays removed", entry_id)
            continue
        if entry_id in removed:  # its manifest entry changed since: it is back
            client.hdel(keys.schedules_removed(), entry_id)
        current = Entry.from_hash(entry_id, entries.read(entry_id))
        if current.state in ("active", "paused") and current.fingerprint == fingerprint:
            continue
        client.delete(keys.background(entry_id))
        policy = template.policy or Policy()
        due = Grid(template.interval, template.cron, template.timezone).first(now, policy.start_at)
        entries.create(entry_id, template, due, ttl_until(due, now, template.timeout, keep))
        log.info("schedule %s: first run due in %.0fs", entry_id, due - now)
    for entry_id in removed.keys() - wanted.keys():  # left the manifest: so did its removal
        client.hdel(keys.schedules_removed(), entry_id)
    for raw_id in client.smembers(keys.background_index()):
        entry_id = as_text(raw_id)
        if entry_id.startswith(PREFIX) and entry_id not in wanted:
            entries.cancel(entry_id, keep, remember=False)
            log.info("schedule %s left the manifest: cancelled", entry_id)


def _team_node(manifest: AgentsManifest, team: str, schedule: str) -> TeamNode | ChainNode:
    spec = manifest.teams[team]
    members: list[AgentNode | TeamNode | ChainNode] = [
        AgentNode(agent=manifest.agent_spec(m), conversation_id=f"{PREFIX}{schedule}:{m}")
        if m in manifest.agents
        else _team_node(manifest, m, schedule)
        for m in spec.members
    ]
    kind = TeamNode if spec.mode == "parallel" else ChainNode
    return kind(name=team, shared_prompt=spec.shared_prompt, members=members)
