"""Conversation history in Redis, shared by every worker and client; appends are idempotent."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from .keys import Keys
from .messages import ChatMessage

# KEYS: messages list, appended-runs set. ARGV: run id, ttl, message JSON... A run's messages
# are appended once, however often the run is delivered or retried.
_APPEND_ONCE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


class ConversationStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, *, ttl: int) -> None:
        self._redis = client
        self._keys = keys
        self._ttl = ttl

    async def load(self, conversation_id: str) -> list[ChatMessage]:
        raw = await self._redis.lrange(self._keys.conversation(conversation_id), 0, -1)
        return self.parse(raw)

    def load_in(self, pipe: Pipeline, conversation_id: str) -> None:
        """Queue the read of ``load`` on ``pipe``; ``parse`` its reply."""
        pipe.lrange(self._keys.conversation(conversation_id), 0, -1)

    @staticmethod
    def parse(raw: list[bytes] | list[bytes | str]) -> list[ChatMessage]:
        return [ChatMessage.model_validate_json(item) for item in raw]

    def append_in(
        self, pipe: Pipeline, conversation_id: str, run_id: str, messages: list[ChatMessage]
    ) -> None:
        """Queue the append of ``messages`` on ``pipe`` (a run's final round trip), unless
        ``run_id`` was appended before. As ``EVAL``, not ``EVALSHA``: a Redis that lost its
        scripts (restarted) still appends, in order."""
        keys = [
            self._keys.conversation(conversation_id),
            self._keys.conversation_runs(conversation_id),
        ]
        pipe.eval(
            _APPEND_ONCE,
            len(keys),
            *keys,
            run_id,
            self._ttl,
            *(m.model_dump_json() for m in messages),
        )

    async def clear(self, conversation_id: str) -> None:
        await self._redis.delete(
            self._keys.conversation(conversation_id), self._keys.conversation_runs(conversation_id)
        )
