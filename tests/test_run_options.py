"""The run* methods of Agent, Team and TeamRun take the same keyword options (one model)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

import pytest

from celery_agents import Agent, RunOptions, Team, TeamRun, UserError
from celery_agents.facade.options import RunKwargs

RUN_METHODS = [
    "run",
    "run_sync",
    "run_iter",
    "run_stream",
    "submit",
    "run_in_background",
    "run_job",
]


def keyword_options(method: Callable[..., object]) -> set[str]:
    """The keywords ``method`` accepts: its keyword-only parameters and the keys of its
    ``**options: Unpack[TypedDict]``. Anything else after ``self`` must be the prompt(s)."""
    names: set[str] = set()
    hints = typing.get_type_hints(method)
    for parameter in list(inspect.signature(method).parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            names.add(parameter.name)
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            (typed_dict,) = typing.get_args(hints[parameter.name])
            names |= set(typing.get_type_hints(typed_dict))
        else:
            assert parameter.name in ("prompts", "job"), f"{method}: {parameter} is positional"
    return names


@pytest.mark.parametrize("method", RUN_METHODS)
def test_agent_team_and_teamrun_accept_the_same_keyword_options(method: str) -> None:
    agent, team, chain = (keyword_options(getattr(k, method)) for k in (Agent, Team, TeamRun))
    assert agent == team == chain
    assert set(RunOptions.model_fields) <= agent


def test_execute_iter_takes_the_run_options_too() -> None:
    assert keyword_options(TeamRun.execute_iter) == set(RunOptions.model_fields)


def test_the_keyword_spelling_of_the_options_is_the_model() -> None:
    assert typing.get_type_hints(RunKwargs) == {
        name: field.annotation for name, field in RunOptions.model_fields.items()
    }
    assert RunKwargs.__required_keys__ == frozenset()


def test_run_options_are_frozen() -> None:
    options = RunOptions(tenant="acme")
    with pytest.raises(ValueError, match="frozen"):
        options.tenant = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"store_histroy": False}, "store_histroy: Extra inputs are not permitted"),
        ({"store_history": "no"}, "store_history: Input should be a valid boolean"),
        ({"timeout": "soon"}, "timeout: Input should be a valid number"),
    ],
)
async def test_a_bad_run_option_is_refused_naming_it(
    options: dict[str, object], named: str
) -> None:
    agent = Agent("a", "test:echo")
    for target in (agent, agent & Agent("b", "test:echo"), agent | Agent("b", "test:echo")):
        with pytest.raises(UserError, match=f"run options: {named}"):
            await target.run("x", **options)  # type: ignore[arg-type]
