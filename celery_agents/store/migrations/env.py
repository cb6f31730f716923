"""Alembic's environment for the run store. The store runs the migrations itself, on a
connection it opened (``store/migrate.py``); there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from celery_agents.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the run store's migrations run from celery_agents.store.migrate")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
