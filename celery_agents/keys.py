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

    def run_epoch(self, run_id: str) -> str:
        """The epoch of a run's seq counter: made anew whenever the counter starts over."""
        return f"{self.prefix}:run:{run_id}:epoch"

    def run_published(self, run_id: str) -> str:
        """The token and first seq of the last publish of a run's events (a call sent again
        after a lost reply is not published twice)."""
        return f"{self.prefix}:run:{run_id}:pub"

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

    def worker_alive(self, hostname: str) -> str:
        """Set every second by a live worker process; it lapses seconds after it died."""
        return f"{self.prefix}:alive:{hostname}"

    def holders(self) -> str:
        """Set of the worker processes that say what they hold (``held_tags``, ``held_runs``)."""
        return f"{self.prefix}:holders"

    def held_tags(self, hostname: str) -> str:
        """Set of the delivery tags of the task messages a worker process holds."""
        return f"{self.prefix}:held:{hostname}:tags"

    def held_runs(self, hostname: str) -> str:
        """Set of the run ids whose leases a worker process holds."""
        return f"{self.prefix}:held:{hostname}:runs"

    def taken_over(self, hostname: str) -> str:
        """Set by the live worker that took a dead one's runs over (once)."""
        return f"{self.prefix}:taken:{hostname}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def run_state(self, run_id: str) -> str:
        """Hash of a run's durable record: state, attempt, worker, times."""
        return f"{self.prefix}:run:{run_id}:state"

    def run_lock(self, run_id: str) -> str:
        """Lease of the one live execution of a run (renewed while it runs)."""
        return f"{self.prefix}:run:{run_id}:lock"

    def run_journal(self, run_id: str) -> str:
        """Hash of a run's journaled steps (step -> entry), replayed by its next attempt."""
        return f"{self.prefix}:run:{run_id}:journal"

    def run_cancel(self, run_id: str) -> str:
        """Set when a run is cancelled; a worker checks it before starting the run."""
        return f"{self.prefix}:run:{run_id}:cancel"

    def control_channel(self) -> str:
        """Pub/sub channel every worker process listens on (``cancel <run_id>``)."""
        return f"{self.prefix}:control"

    def background(self, entry_id: str) -> str:
        """Hash of a background run / schedule entry: its template, counters and state."""
        return f"{self.prefix}:bg:{entry_id}"

    def background_done(self, entry_id: str) -> str:
        """Set of the run ids an entry has counted (completion is idempotent per run)."""
        return f"{self.prefix}:bg:{entry_id}:done"

    def background_running(self, entry_id: str) -> str:
        """Sorted set of an entry's runs in flight, by when each started."""
        return f"{self.prefix}:bg:{entry_id}:running"

    def schedule(self) -> str:
        """Sorted set of entry ids by the time their next run is due."""
        return f"{self.prefix}:schedule"

    def background_index(self) -> str:
        """Set of the ids of entries that have not ended."""
        return f"{self.prefix}:bg-index"

    def schedules_removed(self) -> str:
        """Hash of the manifest schedules removed by hand: entry id -> the fingerprint of the
        definition removed (no TTL: it holds at most one field per manifest schedule)."""
        return f"{self.prefix}:schedules-removed"

    def beat_lock(self) -> str:
        return f"{self.prefix}:beat:lock"

    def beat_alive(self) -> str:
        """Exists while a beat holds the lock and ticks."""
        return f"{self.prefix}:beat:alive"

    def tenant_tokens(self, tenant: str, day: str) -> str:
        """Tokens a tenant used on one UTC day (``YYYY-MM-DD``)."""
        return f"{self.prefix}:tenant:{tenant}:tokens:{day}"

    def tenant_leases(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:leases"

    def tree_payload(self, run_id: str) -> str:
        """A Team/TeamRun run's payload, kept while it runs (for its dead letter)."""
        return f"{self.prefix}:run:{run_id}:tree"

    def dead_letters(self) -> str:
        """List of the ids of failed runs kept for inspection and retry (newest first)."""
        return f"{self.prefix}:dead"

    def dead_letter(self, run_id: str) -> str:
        """One failed run: its payload (which holds no secrets) and its error."""
        return f"{self.prefix}:dead:{run_id}"

    def console_session(self, digest: str) -> str:
        """A console login: the API key's id, under the SHA-256 of the session's cookie."""
        return f"{self.prefix}:session:{digest}"

    def recent_runs(self) -> str:
        """Sorted set: the runs clients queued (scored by when), for as long as Redis keeps
        their records: what the console lists as in flight."""
        return f"{self.prefix}:recent"

    def idempotency(self, key: str) -> str:
        """The run id that owns an idempotency key."""
        return f"{self.prefix}:idem:{key}"

    def provider_limits(self, provider: str) -> str:
        """Prefix of a provider's fleet-wide limiter keys."""
        return f"{self.prefix}:limits:{provider}"

    def usage_minute(self, minute: int) -> str:
        """Hash of per-agent runs, errors, tokens and cost in one minute (epoch minutes)."""
        return f"{self.prefix}:usage:{minute}"

    def store_records(self, store: str) -> str:
        """Stream of ended runs' records on their way to one run store (``store``: its id,
        ``store/url.py``), drained by that store's writers."""
        return f"{self.prefix}:store:{store}:records"

    def client_channel(self, client_id: str) -> str:
        """A client's own channel; keeps its pub/sub connection subscribed while idle."""
        return f"{self.prefix}:client:{client_id}"

    def delivery(self, delivery_id: str) -> str:
        """Hash of one delivery of a run's outcome (``<run_id>:<n>``, n: the target's index):
        its target, body, attempts and state; kept a day once delivered, as a tombstone."""
        return f"{self.prefix}:delivery:{delivery_id}"

    def deliveries_pending(self) -> str:
        """Sorted set of the ids of deliveries to attempt, by when their next attempt is due."""
        return f"{self.prefix}:deliveries:pending"

    def deliveries_failed(self) -> str:
        """Sorted set of the ids of deliveries that gave up (by when), until retried."""
        return f"{self.prefix}:deliveries:failed"
