"""The canvases Teams and TeamRuns become: what runs as its own task, under which id."""

from __future__ import annotations

from celery import Celery
from celery.canvas import _chain, _chord

from celery_agents import Agent, Settings, Team, TeamRun
from celery_agents.tasks.app import create_client_app
from celery_agents.tasks.canvas import build_canvas
from celery_agents.tasks.names import COLLECT_TEAM, FINISH_CHAIN, RUN_AGENT
from celery_agents.tasks.tree import TreePayload

APP: Celery = create_client_app(Settings())


def _tree(group: Team | TeamRun) -> TreePayload:
    return TreePayload(run_id="root", node=group.to_node(), prompt="go", timeout=60)


def _agents(n: int) -> list[Agent]:
    return [Agent(f"a{i}", "test:echo") for i in range(n)]


def test_a_team_run_ending_in_an_agent_has_no_task_of_its_own_to_end_it() -> None:
    canvas = build_canvas(APP, _tree(TeamRun(_agents(3))))
    assert isinstance(canvas, _chain)
    assert [task.task for task in canvas.tasks] == [RUN_AGENT] * 3
    *stages, last = canvas.tasks
    assert last.kwargs["payload"]["finish"]["run_id"] == "root"
    assert all(stage.kwargs["payload"]["finish"] is None for stage in stages)
    # Every stage stores its result; the last one's is the TeamRun's, under the TeamRun's id.
    assert [stage.options.get("ignore_result") for stage in canvas.tasks] == [None] * 3
    assert [stage.options["task_id"] for stage in stages] == [
        stage.kwargs["payload"]["run_id"] for stage in stages
    ]
    assert last.options["task_id"] == "root"
    assert last.kwargs["payload"]["run_id"] != "root"


def test_a_team_run_ending_in_a_team_ends_with_finish_chain() -> None:
    first, *members = _agents(3)
    canvas = build_canvas(APP, _tree(TeamRun([first, Team(members)])))
    assert isinstance(canvas, _chain)
    stage, team = canvas.tasks  # Celery folds what follows a chord into its body
    assert stage.task == RUN_AGENT and stage.options.get("ignore_result") is None
    assert isinstance(team, _chord) and isinstance(team.body, _chain)
    assert [task.task for task in team.body.tasks] == [COLLECT_TEAM, FINISH_CHAIN]
    collect, finish = team.body.tasks
    assert collect.options["task_id"] == collect.kwargs["payload"]["run_id"] != "root"
    assert finish.options["task_id"] == "root"


def test_team_members_store_their_results_for_the_chord() -> None:
    canvas = build_canvas(APP, _tree(Team(_agents(3))))
    assert isinstance(canvas, _chord)
    assert [m.options.get("ignore_result") for m in canvas.tasks] == [None] * 3
    assert all(m.kwargs["payload"]["finish"] is None for m in canvas.tasks)
