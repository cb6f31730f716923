"""Every Redis key and pub/sub channel name the project uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``Settings.key_prefix``)."""

    prefix: str = "celery_agents"

    def run_channel(self, run_id: str) -> str:
        """Pub/sub channel carrying a run's events."""
        return f"{self.prefix}:run:{run_id}:events"

    def run_log(self, run_id: str) -> str:
        """Capped, TTL'd list of a run's published events (the replay log)."""
        return f"{self.prefix}:run:{run_id}:log"

    def run_seq(self, run_id: str) -> str:
        """Counter that hands out a run's gap-free event sequence numbers."""
        return f"{self.prefix}:run:{run_id}:seq"

    def run_usage(self, run_id: str) -> str:
        """Hash of the tokens and cost a Team/TeamRun's members used (rolled up as they end)."""
        return f"{self.prefix}:run:{run_id}:usage"

    def conversation(self, conversation_id: str) -> str:
        """List of a conversation's messages (JSON)."""
        return f"{self.prefix}:conv:{conversation_id}:messages"

    def conversation_runs(self, conversation_id: str) -> str:
        """Set of run ids already appended to a conversation (idempotent appends)."""
        return f"{self.prefix}:conv:{conversation_id}:runs"

    def worker(self, hostname: str) -> str:
        """Heartbeat of a live worker: its tools, concurrency and start time."""
        return f"{self.prefix}:worker:{hostname}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def client_channel(self, client_id: str) -> str:
        """A client's own channel; keeps its pub/sub connection subscribed while idle."""
        return f"{self.prefix}:client:{client_id}"
