"""The durable run store: every run's record, usage and cost, on SQL (SQLAlchemy 2, async).

Workers hand each ended run's ``RunEntry`` to Redis in the round trip its end already makes
(``handoff``); a writer on each worker drains them into the database in batches (``writer``).
SQLite by default, PostgreSQL for fleets (``CELERY_AGENTS_STORE_URL``), ``none`` turns it off.
"""
