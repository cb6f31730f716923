// The console's few behaviours: start a run, refresh the runs list, follow a run's events
// (EventSource: it resumes by itself with Last-Event-ID), and the schedule buttons.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);

async function postJson(url, body) {
  const answer = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = data.error || { type: "HTTPError", message: answer.statusText };
    throw new Error(`${error.type}: ${error.message}`);
  }
  return data;
}

function stateBadge(state) {
  const badge = document.createElement("span");
  badge.className = `state state-${state}`;
  badge.textContent = state;
  return badge;
}

function startForm() {
  const form = document.getElementById("start-run");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const run = await postJson("/v1/runs", { agent: data.get("agent"), prompt: data.get("prompt") });
      window.location.assign(`/runs/${run.run_id}`);
    } catch (error) {
      document.getElementById("start-error").textContent = error.message;
    }
  });
}

function refreshRuns() {
  const box = document.getElementById("runs");
  if (!box) return;
  setInterval(async () => {
    const answer = await fetch(box.dataset.refresh);
    if (answer.ok) box.innerHTML = await answer.text();
  }, 2000);
}

function followRun() {
  const section = document.getElementById("run");
  if (!section) return;
  const runId = section.dataset.run;
  const stream = document.getElementById("stream");
  const tools = document.getElementById("tools");
  const parts = new Map(); // member name (or "") -> its text element

  const textOf = (member) => {
    const key = member || "";
    if (!parts.has(key)) {
      const block = document.createElement("div");
      block.className = "part";
      if (member) {
        const label = document.createElement("h3");
        label.textContent = member;
        block.appendChild(label);
      }
      const text = document.createElement("pre");
      text.className = "text";
      block.appendChild(text);
      stream.appendChild(block);
      parts.set(key, text);
    }
    return parts.get(key);
  };
  const addTool = (line) => {
    const empty = tools.querySelector(".empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.textContent = line;
    tools.appendChild(item);
  };
  const setState = (state) => {
    section.dataset.state = state;
    const cell = document.getElementById("run-state");
    cell.replaceChildren(stateBadge(state));
    if (TERMINAL.has(state)) document.getElementById("cancel-run")?.remove();
  };

  const source = new EventSource(`/v1/runs/${runId}/events`);
  source.addEventListener("run.started", (e) => {
    if (!JSON.parse(e.data).member) setState("running");
  });
  source.addEventListener("text.delta", (e) => {
    const event = JSON.parse(e.data);
    textOf(event.member).textContent += event.text;
  });
  source.addEventListener("tool.call", (e) => {
    const event = JSON.parse(e.data);
    addTool(`${event.member ? event.member + ": " : ""}${event.tool_name}(${JSON.stringify(event.args)})`);
  });
  source.addEventListener("tool.result", (e) => {
    const event = JSON.parse(e.data);
    addTool(`→ ${event.tool_name}: ${JSON.stringify(event.result)}`);
  });
  source.addEventListener("message", (e) => {
    const event = JSON.parse(e.data);
    const message = event.message || {};
    if (event.member && !parts.has(event.member) && typeof message.content === "string") {
      textOf(event.member).textContent = message.content;
    }
  });
  const finish = async (state) => {
    source.close();
    const answer = await fetch(`/v1/runs/${runId}`);
    if (!answer.ok) return setState(state);
    const run = await answer.json();
    setState(run.status);
    if (run.input_tokens != null) {
      document.getElementById("run-tokens").textContent = `${run.input_tokens} in / ${run.output_tokens} out`;
    }
    if (run.cost != null) document.getElementById("run-cost").textContent = `$${run.cost.toFixed(6)}`;
    if (run.ended_at) {
      document.getElementById("run-ended").textContent = run.ended_at.replace("T", " ").slice(0, 19);
    }
    if (!parts.size && run.result && typeof run.result.content === "string") {
      textOf("").textContent = run.result.content;
    }
  };
  source.addEventListener("run.done", (e) => {
    const event = JSON.parse(e.data);
    if (!event.member) finish("succeeded");
  });
  source.addEventListener("run.failed", (e) => {
    const event = JSON.parse(e.data);
    if (event.member) return;
    document.getElementById("run-error").textContent = `${event.error.type}: ${event.error.message}`;
    finish("failed");
  });
  source.addEventListener("error", (e) => {
    if (e.data) {
      const error = JSON.parse(e.data);
      document.getElementById("run-error").textContent = `${error.type}: ${error.message}`;
      source.close();
    }
  });
  document.getElementById("cancel-run")?.addEventListener("click", async () => {
    try {
      await postJson(`/v1/runs/${runId}/cancel`);
    } catch (error) {
      document.getElementById("run-error").textContent = error.message;
    }
  });
}

function scheduleButtons() {
  const table = document.getElementById("schedules");
  if (!table) return;
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    const id = row.dataset.schedule;
    try {
      await postJson(`/v1/schedules/${encodeURIComponent(id)}/${button.dataset.action}`);
      const answer = await fetch(`/v1/schedules/${encodeURIComponent(id)}`);
      const schedule = await answer.json();
      row.querySelector(".schedule-state").replaceChildren(stateBadge(schedule.state));
    } catch (error) {
      document.getElementById("schedule-error").textContent = error.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  startForm();
  refreshRuns();
  followRun();
  scheduleButtons();
});
