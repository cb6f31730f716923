"""The store's tables (SQLAlchemy Core). Alembic's migrations (``migrations/``) make them;
a change here goes with a new revision there."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("parent_id", sa.String(64), index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("tenant", sa.String(128)),
    sa.Column("schedule", sa.Text),
    sa.Column("conversation_id", sa.String(128), index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.Text),
    sa.Column("error_type", sa.String(128)),
    sa.Column("error_message", sa.Text),
    sa.Column("queued_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("cost", sa.Float),
    sa.Column("prompt", sa.Text),
    sa.Column("message", sa.JSON),
    # The run's turn (prompt, answer) is in its conversation's history (revision 0002).
    sa.Column("in_history", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_runs_ended_at", "ended_at"),
    sa.Index("ix_runs_name_ended_at", "name", "ended_at"),
    sa.Index("ix_runs_tenant_ended_at", "tenant", "ended_at"),
    sa.Index("ix_runs_schedule_ended_at", "schedule", "ended_at"),
)

# API keys (revision 0003): only a key's SHA-256 is kept (store/keys.py).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
