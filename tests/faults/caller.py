"""A client process for the disconnect tests, configured from ``CELERY_AGENTS_*``.

``python -m tests.faults.caller stream CONVERSATION PROMPT``: streams a run of
``scripted:slow``, printing one JSON line with the run id, then one per event (``seq``,
``kind``) as it reads them.

``python -m tests.faults.caller submit CONVERSATION PROMPT``: submits the run, prints its id,
then waits on stdin (the test kills it).

Each line is flushed as it is written, so the test sees exactly what this process had read
when it kills it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from celery_agents import Agent

MODEL = "scripted:slow"


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def stream(agent: Agent, conversation: str, prompt: str) -> None:
    async with agent.run_stream(prompt, conversation_id=conversation) as run:
        say(run_id=run.run_id)
        async for event in run.events():
            say(seq=event.seq, kind=event.kind)


async def submit(agent: Agent, conversation: str, prompt: str) -> None:
    handle = await agent.submit(prompt, conversation_id=conversation)
    say(run_id=handle.run_id)
    await asyncio.to_thread(sys.stdin.read)  # until killed (or stdin closes)


def main(argv: list[str]) -> None:
    mode, conversation, prompt = argv
    agent = Agent("caller", MODEL)
    asyncio.run((stream if mode == "stream" else submit)(agent, conversation, prompt))


if __name__ == "__main__":
    main(sys.argv[1:])
