"""Console logins: a random cookie whose SHA-256 names, in Redis, the API key it logged in
with, for ``SESSION_TTL``. Each request checks that key again, so a revoked key's sessions
end with it; logging out deletes the session."""

from __future__ import annotations

import secrets

from ..facade.bridge import on_io
from ..facade.client import get_client
from ..store.keys import digest
from ..text import as_text

SESSION_TTL = 12 * 3600  # seconds a login lasts


async def open_session(key_id: str) -> str:
    """A new session of the key ``key_id``: the cookie's value."""
    token = secrets.token_urlsafe(32)

    async def store() -> None:
        client = get_client()
        await client.redis.set(client.keys.console_session(digest(token)), key_id, ex=SESSION_TTL)

    await on_io(store())
    return token


async def session_key(token: str) -> str | None:
    """The id of the key the session ``token`` logged in with (None: no such session)."""

    async def read() -> str | None:
        client = get_client()
        found = await client.redis.get(client.keys.console_session(digest(token)))
        return None if found is None else as_text(found)

    return await on_io(read())


async def close_session(token: str) -> None:
    async def delete() -> None:
        client = get_client()
        await client.redis.delete(client.keys.console_session(digest(token)))

    await on_io(delete())
