"""The web console in a real browser (Debian's chromium, driven by Playwright) against the
API server and the session's worker: log in, start a run and watch its tokens arrive, pause a
schedule, read usage. Screenshots go to tests/artifacts/console/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx2
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from celery_agents import Agent
from celery_agents.embedded.api_server import ApiProcess
from celery_agents.testing.scripted_server import Reply, ScriptedModelServer
from tests.support.browser import artifact, need_chromium
from tests.support.http_api import api, bearer, new_key

__all__ = ["api"]  # the module's server (a fixture)

pytestmark = pytest.mark.usefixtures("agents")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = need_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def logged_in(browser: Browser, api: ApiProcess, key: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{api.url}/schedules")
    await expect(page).to_have_url(re.compile(r"/login\?next=/schedules$"))
    await page.fill("input[name=key]", "cak_wrong")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("That key is not known, or was revoked.")
    await page.fill("input[name=key]", key)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{api.url}/schedules")  # back where it was going
    return page


async def test_log_in_start_a_run_and_watch_its_tokens_arrive(
    api: ApiProcess, browser: Browser, scripted_model: ScriptedModelServer
) -> None:
    words = " ".join(f"w{n}" for n in range(60))
    scripted_model.script(Reply(text=words, token_delay=0.05), model="analyst")
    page = await logged_in(browser, api, new_key(api, "northwind"))
    await page.goto(f"{api.url}/")
    await page.select_option("select[name=agent]", "analyst")
    await page.fill("input[name=prompt]", "talk to me")
    await page.screenshot(path=artifact("console", "runs.png"), full_page=True)
    await page.click("#start-run button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]{32}$"))

    stream = page.locator("#stream")
    await expect(stream).to_contain_text("w0 w1 w2")
    partial = await stream.inner_text()
    assert "w59" not in partial  # tokens arrive one by one, not with the answer
    await page.screenshot(path=artifact("console", "run-streaming.png"), full_page=True)
    await expect(page.locator("#run-state")).to_have_text("succeeded", timeout=20_000)
    await expect(stream).to_have_text(words)
    await expect(page.locator("#run-tokens")).to_contain_text(" in / ")
    await page.screenshot(path=artifact("console", "run-done.png"), full_page=True)


async def test_pause_a_schedule_and_read_usage(
    api: ApiProcess, browser: Browser, agents_beat: object
) -> None:
    key = new_key(api, "northwind")
    entry = await Agent("console-nightly", "test:echo").run_in_background(
        "the nightly report", interval=3600, tenant="northwind"
    )
    try:
        page = await logged_in(browser, api, key)
        row = page.locator(f"tr[data-schedule='{entry.id}']")
        await expect(row.locator(".schedule-state")).to_have_text("active")
        await row.get_by_role("button", name="Pause").click()
        await expect(row.locator(".schedule-state")).to_have_text("paused")
        await page.screenshot(path=artifact("console", "schedules.png"), full_page=True)
        async with httpx2.AsyncClient(base_url=api.url) as http:
            shown = await http.get(f"/v1/schedules/{entry.id}", headers=bearer(key))
        assert shown.json()["state"] == "paused"

        await page.goto(f"{api.url}/usage")
        await expect(page.get_by_role("heading", name="By agent")).to_be_visible()
        await page.screenshot(path=artifact("console", "usage.png"), full_page=True)
        await page.click("text=Log out")
        await expect(page).to_have_url(f"{api.url}/login")
        await page.goto(f"{api.url}/")
        await expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    finally:
        await entry.cancel()
