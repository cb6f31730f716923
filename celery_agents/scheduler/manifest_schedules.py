"""The manifest's ``schedules:`` as background entries: recurring analyses without a client.

Entry ids are ``schedule:<name>``. At beat start an entry whose definition changed (or that
ended) is made anew; one that is unchanged keeps its counters and its due time; one whose
schedule left the manifest is cancelled.
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
from .entries import Entries, Entry, EntryTemplate, due_after, ttl_until

log = logging.getLogger("celery_agents.beat")
PREFIX = "schedule:"


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
        ).model_dump(mode="json")
    else:
        task = RUN_TEAM
        payload = TreePayload(
            run_id="pending",
            node=_team_node(manifest, spec.team or "", name),
            prompt=spec.prompt,
            store_history=False,
            timeout=timeout,
        ).model_dump(mode="json")
    return EntryTemplate(
        name=name,
        task=task,
        payload=payload,
        interval=spec.every,
        cron=spec.cron,
        timezone=spec.timezone,
        timeout=timeout,
    )


def sync_manifest_schedules(
    entries: Entries, manifest: AgentsManifest, settings: Settings, now: float
) -> None:
    wanted = {
        f"{PREFIX}{name}": template_for(name, spec, manifest, settings)
        for name, spec in manifest.schedules.items()
    }
    keep = settings.result_ttl
    for entry_id, template in wanted.items():
        current = Entry.from_hash(entry_id, entries.read(entry_id))
        if current.state in ("active", "paused") and _same(current, template):
            continue
        entries.client.delete(entries.keys.background(entry_id))
        due = (
            now if template.cron is None else due_after(None, template.cron, template.timezone, now)
        )
        entries.create(entry_id, template, due, ttl_until(due, now, template.timeout, keep))
        log.info("schedule %s: first run due in %.0fs", entry_id, due - now)
    for raw_id in entries.client.smembers(entries.keys.background_index()):
        entry_id = as_text(raw_id)
        if entry_id.startswith(PREFIX) and entry_id not in wanted:
            entries.cancel(entry_id, keep)
            log.info("schedule %s left the manifest: cancelled", entry_id)


def _same(entry: Entry, template: EntryTemplate) -> bool:
    return (entry.task, entry.payload, entry.interval, entry.cron, entry.timezone) == (
        template.task,
        template.payload,
        template.interval,
        template.cron,
        template.timezone,
    )


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
