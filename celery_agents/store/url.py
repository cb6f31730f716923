"""Which database the store uses: ``CELERY_AGENTS_STORE_URL``, checked at start.

Unset: a SQLite file under the user's data directory. A path: a SQLite file there.
``sqlite+aiosqlite:///...`` or ``postgresql+asyncpg://...`` (``sqlite://`` and
``postgresql://`` mean those drivers). ``none``: no store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import ConfigError

DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
EXPECTED = (
    "expected sqlite+aiosqlite:///PATH, postgresql+asyncpg://USER@HOST/DB, a file path, or none"
)


def default_path() -> Path:
    """The store's file when no URL is given: ``$XDG_DATA_HOME/celery-agents/runs.db``."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "celery-agents" / "runs.db"


def store_url(raw: str | None) -> URL | None:
    """The store's URL from the setting's value (None: the default file; ``none``: off).
    A malformed or unsupported URL is a ``ConfigError`` naming the variable."""
    if raw is None:
        return _sqlite(default_path())
    text = raw.strip()
    if text.lower() == "none":
        return None
    if "://" not in text:
        return _sqlite(Path(text).expanduser())
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(f"CELERY_AGENTS_STORE_URL is not a URL ({EXPECTED})") from None
    driver = DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(
            f"CELERY_AGENTS_STORE_URL: unsupported database {url.drivername!r} ({EXPECTED})"
        )
    url = url.set(drivername=driver)
    if driver.startswith("sqlite") and not url.database:
        raise ConfigError(f"CELERY_AGENTS_STORE_URL names no SQLite file ({EXPECTED})")
    if driver.startswith("postgresql") and not url.database:
        raise ConfigError(f"CELERY_AGENTS_STORE_URL names no PostgreSQL database ({EXPECTED})")
    return url


def shown(url: URL) -> str:
    """The URL for logs and errors: never its password."""
    return url.render_as_string(hide_password=True)


def store_id(url: URL) -> str:
    """A short name of the database (its URL without the password): workers of different
    stores on one Redis never drain each other's records."""
    return hashlib.sha256(shown(url).encode()).hexdigest()[:12]


def _sqlite(path: Path) -> URL:
    return URL.create("sqlite+aiosqlite", database=str(path.absolute()))
