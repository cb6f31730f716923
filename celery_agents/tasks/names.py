"""Task names, as Flower and ``celery inspect`` show them."""

RUN_AGENT = "celery_agents.run_agent"
