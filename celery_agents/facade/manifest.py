"""Teams and TeamRuns built from the manifest's declarations (agents: ``Agent.from_manifest``).

manifest = AgentsManifest.from_yaml("agents.yaml")
reviewers = team_from_manifest(manifest, "reviewers")
either = named(manifest, "reviewers")  # an agent or a team, whichever the name is
"""

from __future__ import annotations

from ..config.manifest import AgentsManifest
from ..errors import ConfigError, UnknownAgentError
from .agent import Agent
from .team import Team, TeamRun


def team_from_manifest(manifest: AgentsManifest, name: str) -> Team | TeamRun:
    """The ``Team`` (mode parallel) or ``TeamRun`` (mode sequential) named ``name``; its
    agents come from the same manifest (``Agent.from_manifest``)."""

    def build(team_name: str, path: tuple[str, ...]) -> Team | TeamRun:
        if team_name in path:
            cycle = " -> ".join([*path, team_name])
            raise ConfigError(f"{manifest.source or 'manifest'}: teams.{team_name}: cycle {cycle}")
        spec = manifest.teams.get(team_name)
        if spec is None:
            known = ", ".join(sorted(manifest.teams)) or "none"
            raise UnknownAgentError(f"unknown team {team_name!r} (known: {known})", team=team_name)
        members = [
            Agent.from_manifest(manifest, m)
            if m in manifest.agents
            else build(m, (*path, team_name))
            for m in spec.members
        ]
        kind = Team if spec.mode == "parallel" else TeamRun
        return kind(members, name=team_name, shared_prompt=spec.shared_prompt)

    return build(name, ())


def named(manifest: AgentsManifest, name: str) -> Agent | Team | TeamRun:
    """The agent, Team or TeamRun the manifest declares under ``name``."""
    if name in manifest.agents:
        return Agent.from_manifest(manifest, name)
    if name in manifest.teams:
        return team_from_manifest(manifest, name)
    known = ", ".join(sorted({*manifest.agents, *manifest.teams})) or "none"
    raise UnknownAgentError(
        f"no agent or team {name!r} in {manifest.source or 'the manifest'} (known: {known})",
        agent=name,
    )
