"""Tenants' daily token budgets, read the same way by clients (to fail fast) and workers."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from .config.manifest import AgentsManifest
from .errors import BudgetExceeded, UserError
from .keys import Keys

DAY_TTL = 2 * 86400


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


async def check_budget(
    client: aioredis.Redis, keys: Keys, manifest: AgentsManifest, tenant: str
) -> None:
    """``BudgetExceeded`` if the tenant has spent its tokens for today; ``UserError`` if the
    manifest does not know the tenant."""
    spec = manifest.tenants.get(tenant)
    if spec is None:
        known = ", ".join(sorted(manifest.tenants)) or "none"
        raise UserError(f"unknown tenant {tenant!r} (known: {known})", tenant=tenant)
    if spec.daily_token_budget is None:
        return
    used = int(await client.get(keys.tenant_tokens(tenant, today())) or 0)
    if used >= spec.daily_token_budget:
        raise BudgetExceeded(
            f"tenant {tenant!r} has used {used} of its {spec.daily_token_budget} tokens today "
            "(UTC); no model was called",
            tenant=tenant,
            used=used,
            budget=spec.daily_token_budget,
        )


async def spend(client: aioredis.Redis, keys: Keys, tenant: str, tokens: int) -> None:
    key = keys.tenant_tokens(tenant, today())
    async with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, DAY_TTL)
        await pipe.execute()
