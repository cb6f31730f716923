"""Task names, as Flower and ``celery inspect`` show them."""

RUN_AGENT = "celery_agents.run_agent"
RUN_TEAM = "celery_agents.run_team"
COLLECT_TEAM = "celery_agents.collect_team"
FINISH_CHAIN = "celery_agents.finish_chain"
