"""Who calls: the API key of ``Authorization: Bearer KEY`` (or the console's session cookie).

A tenant key sees and acts on its own tenant's runs and schedules only; anything else answers
404, as if it did not exist. An admin key sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..facade.stored import with_store
from ..store.keys import ApiKey, find_key, key_by_id
from .errors import ApiError, unauthorized
from .sessions import session_key

SESSION_COOKIE = "celery_agents_session"

bearer = HTTPBearer(
    auto_error=False,
    description="An API key, made by `celery-agents keys create --tenant T [--admin]`.",
)


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    admin: bool

    def sees(self, tenant: str | None) -> bool:
        return self.admin or (tenant is not None and tenant == self.tenant)

    def scope(self, tenant: str | None) -> str | None:
        """The tenant a query is limited to: a tenant key's own (asking for another's is
        refused); an admin's choice (None: every tenant)."""
        if self.admin:
            return tenant
        if tenant is not None and tenant != self.tenant:
            raise ApiError(403, "Forbidden", f"this key sees tenant {self.tenant!r} only")
        return self.tenant


def _principal(found: ApiKey | None) -> Principal | None:
    if found is None:
        return None
    return Principal(key_id=found.key_id, tenant=found.tenant, admin=found.admin)


async def key_principal(key: str) -> Principal | None:
    """Who ``key`` is (None: not a live key)."""
    return _principal(await with_store(lambda store: find_key(store, key)))


async def session_principal(token: str) -> Principal | None:
    """Who logged in with the session ``token`` (None: none, or its key was revoked)."""
    key_id = await session_key(token)
    if key_id is None:
        return None
    return _principal(await with_store(lambda store: key_by_id(store, key_id)))


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is not None:
        found = await key_principal(credentials.credentials)
        if found is None:
            raise unauthorized("this API key is not known, or was revoked")
        return found
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        found = await session_principal(token)
        if found is None:
            raise unauthorized("the console session ended: log in again")
        return found
    raise unauthorized("no API key: send Authorization: Bearer KEY")


Caller = Annotated[Principal, Depends(principal)]
