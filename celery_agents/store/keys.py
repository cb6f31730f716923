"""API keys: made once, kept as a SHA-256 hash only, looked up by that hash.

A key is ``cak_`` and 43 random URL-safe characters (256 bits): far too many to guess, so a
plain hash is enough (a slow password hash guards low-entropy secrets, which these are not).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, field_validator

from ..errors import UserError
from .database import RunStore
from .schema import api_keys

KEY_PREFIX = "cak_"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


class ApiKey(BaseModel):
    """What is kept of a key (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    tenant: str
    admin: bool
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @field_validator("created_at", "revoked_at")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:  # SQLite drops the zone: it is UTC
            return value.replace(tzinfo=dt.UTC)
        return value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise UserError(
            f"tenant {tenant!r}: 1 to 128 letters, digits or . _ : @ -, starting with a "
            "letter or digit"
        )
    return tenant


async def create_key(store: RunStore, tenant: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key for ``tenant``: what is kept of it, and the key (shown once, never kept)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    made = ApiKey(
        key_id=uuid.uuid4().hex[:12],
        tenant=check_tenant(tenant),
        admin=admin,
        created_at=dt.datetime.now(dt.UTC),
    )
    async with store.engine.begin() as connection:
        await connection.execute(
            sa.insert(api_keys).values(
                **made.model_dump(exclude={"revoked_at"}), key_hash=digest(key)
            )
        )
    return made, key


async def find_key(store: RunStore, key: str) -> ApiKey | None:
    """The live key ``key`` is (None: unknown or revoked)."""
    if not key.startswith(KEY_PREFIX):
        return None
    query = sa.select(api_keys).where(
        api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
    )
    async with store.engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
    return None if row is None else ApiKey.model_validate(dict(row))


async def key_by_id(store: RunStore, key_id: str) -> ApiKey | None:
    """The live key whose id is ``key_id`` (None: unknown or revoked)."""
    query = sa.select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
    async with store.engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
    return None if row is None else ApiKey.model_validate(dict(row))


async def list_keys(store: RunStore) -> list[ApiKey]:
    query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    async with store.engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [ApiKey.model_validate(dict(row)) for row in rows]


async def revoke_key(store: RunStore, key_id: str) -> bool:
    """Revoke the key ``key_id`` (False: no live key has that id)."""
    statement = (
        sa.update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=dt.datetime.now(dt.UTC))
    )
    async with store.engine.begin() as connection:
        result = await connection.execute(statement)
    return bool(result.rowcount)
