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
        raise _exceeded(tenant, used, spec.daily_token_budget)


# KEYS: the tenant's tokens today. ARGV: budget, tokens to reserve, ttl. {1, used} if the
# budget had room and the tokens are reserved, else {0, used}.
_RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return {0, used} end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""


async def reserve(
    client: aioredis.Redis, keys: Keys, manifest: AgentsManifest, tenant: str, tokens: int
) -> int:
    """Reserve ``tokens`` of the tenant's budget for a run about to call its model, in one
    step with the check (runs starting together cannot all pass a check made before any of
    them spent); returns what was reserved (0: no budget), to settle with ``spend``."""
    await check_budget(client, keys, manifest, tenant)  # names an unknown tenant
    budget = manifest.tenants[tenant].daily_token_budget
    if budget is None:
        return 0
    ok, used = await client.eval(
        _RESERVE, 1, keys.tenant_tokens(tenant, today()), budget, tokens, DAY_TTL
    )
    if not ok:
        raise _exceeded(tenant, int(used), budget)
    return tokens


def _exceeded(tenant: str, used: int, budget: int) -> BudgetExceeded:
    return BudgetExceeded(
        f"tenant {tenant!r} has used {used} of its {budget} tokens today (UTC); "
        "no model was called",
        tenant=tenant,
        used=used,
        budget=budget,
    )


async def spend(client: aioredis.Redis, keys: Keys, tenant: str, tokens: int) -> None:
    key = keys.tenant_tokens(tenant, today())
    async with client.pipeline(transaction=False) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, DAY_TTL)
        await pipe.execute()
