"""Redis with AUTH and with TLS (``rediss://``): a real worker and real runs through each, the
server's certificate verified, and the password in no log or status output."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from celery_agents import Agent, Settings, configure
from celery_agents.config.celery_conf import celery_config
from celery_agents.embedded.redis_server import RedisServer, free_port, start_redis_server
from celery_agents.embedded.worker import WorkerProcess, start_beat, start_worker
from celery_agents.errors import ConfigError
from celery_agents.tasks.app import create_app, create_client_app
from celery_agents.testing.plugin import TEST_WORKER_ENV

PASSWORD = f"pw-{uuid.uuid4().hex}"


@dataclass
class Fleet:
    """A private Redis, a worker on it and the facade pointed at it."""

    url: str
    server: RedisServer
    worker: WorkerProcess


@pytest.fixture
def fleet_on(
    agents: Settings, celery_agents_manifest_path: Path
) -> Iterator[list[tuple[str, RedisServer]]]:
    """Append ``(url, server)``; the test then calls ``start_fleet``."""
    started: list[tuple[str, RedisServer]] = []
    yield started
    configure(agents)  # lets go of the private Redis before it stops
    for _, server in started:
        server.stop()


def start_fleet(url: str, server: RedisServer, manifest: Path) -> Fleet:
    queue = f"auth-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        url, manifest=manifest, extra_env={**TEST_WORKER_ENV, "CELERY_AGENTS_QUEUE": queue}
    )
    configure(Settings(redis_url=url, manifest=manifest, queue=queue))
    return Fleet(url, server, worker)


async def runs_go_through(fleet: Fleet) -> None:
    assert (await Agent("a", "test:echo").run("through")).content == "through"
    team = Agent("a", "test:echo") & Agent("b", "test:echo")
    assert (await team.run("both")).content == ["both", "both"]  # a chord: results backend too


def status_output(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CELERY_AGENTS_REDIS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "celery_agents.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- AUTH --------------------------------------------------------------------------------------


async def test_runs_go_through_a_password_protected_redis_and_the_password_shows_nowhere(
    fleet_on: list[tuple[str, RedisServer]], celery_agents_manifest_path: Path
) -> None:
    server = start_redis_server(password=PASSWORD)
    fleet_on.append((server.url, server))
    assert server.url.startswith(f"redis://:{PASSWORD}@")
    anonymous = redis.Redis(host=server.host, port=server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()  # AUTH is really on
    anonymous.close()

    fleet = start_fleet(server.url, server, celery_agents_manifest_path)
    try:
        await runs_go_through(fleet)
        status = status_output(server.url)
        assert status.returncode == 0, status.stderr
        assert fleet.worker.hostname in status.stdout
        log = fleet.worker.log_path.read_text(errors="replace")
        assert "redis://:**@127.0.0.1" in log  # Celery's banner names the broker, masked
        beat = start_beat(
            server.url, manifest=celery_agents_manifest_path, extra_env=TEST_WORKER_ENV
        )
        beat_log = beat.log_path.read_text(errors="replace")
        beat.kill()
        assert ". redis -> redis://:**@127.0.0.1" in beat_log  # our line in its banner, masked
    finally:
        fleet.worker.kill()
    places = {"worker log": log, "beat log": beat_log, "status": status.stdout + status.stderr}
    for place, text in places.items():
        assert PASSWORD not in text, f"the Redis password shows in the {place}"


def test_a_wrong_password_is_a_clear_error_without_the_password(
    fleet_on: list[tuple[str, RedisServer]],
) -> None:
    server = start_redis_server(password=PASSWORD)
    fleet_on.append((server.url, server))
    wrong = f"redis://:not-{PASSWORD}@{server.host}:{server.port}/0"
    status = status_output(wrong)
    assert status.returncode != 0
    assert "invalid username-password pair" in status.stdout + status.stderr
    assert f"not-{PASSWORD}" not in status.stdout + status.stderr


# --- TLS ---------------------------------------------------------------------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=celery-agents test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


@dataclass
class TlsRedis:
    server: RedisServer
    port: int
    ca: Path

    def url(self, *, ca: bool = True) -> str:
        query = f"?ssl_ca_certs={quote(str(self.ca))}" if ca else ""
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0{query}"


@pytest.fixture
def tls_redis(fleet_on: list[tuple[str, RedisServer]], tmp_path: Path) -> TlsRedis:
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    try:
        server = start_redis_server(password=PASSWORD, extra_args=tls)
    except ConfigError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {exc}")
        raise
    made = TlsRedis(server, port, ca)
    fleet_on.append((made.url(), server))
    return made


async def test_runs_go_through_redis_over_tls(
    tls_redis: TlsRedis, celery_agents_manifest_path: Path
) -> None:
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=PASSWORD)
    with pytest.raises(redis.ConnectionError):
        plain.ping()  # the port speaks TLS only: whatever works below went through TLS
    plain.close()

    fleet = start_fleet(tls_redis.url(), tls_redis.server, celery_agents_manifest_path)
    try:
        await runs_go_through(fleet)
        log = fleet.worker.log_path.read_text(errors="replace")
    finally:
        fleet.worker.kill()
    assert "rediss://:**@127.0.0.1" in log
    assert PASSWORD not in log


def test_a_rediss_url_verifies_the_servers_certificate_by_default(tls_redis: TlsRedis) -> None:
    """Without our settings kombu would connect with CERT_NONE (no verification at all);
    the server's certificate is signed by a CA the system does not trust, so every client
    must refuse it, broker and result backend alike."""
    settings = Settings(redis_url=tls_redis.url(ca=False))
    with (
        create_client_app(settings).connection_for_write() as connection,
        pytest.raises(Exception, match="certificate verify failed"),
    ):
        connection.ensure_connection(max_retries=1)
    backend = create_app(settings).backend
    with pytest.raises(Exception, match="certificate verify failed"):
        backend.client.ping()
    backend.client.close()


def test_celery_gets_certificate_checks_for_rediss_urls_only() -> None:
    required = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    both = celery_config(Settings(redis_url="rediss://:pw@redis.example:6380/0"))
    assert both["broker_use_ssl"] == both["redis_backend_use_ssl"] == required
    plain = celery_config(Settings(redis_url="redis://redis.example:6379/0"))
    assert "broker_use_ssl" not in plain and "redis_backend_use_ssl" not in plain
    amqp = celery_config(
        Settings(redis_url="rediss://redis.example:6380/0", broker_url="amqp://rabbit//")
    )
    assert "broker_use_ssl" not in amqp  # RabbitMQ's TLS is configured apart
    assert amqp["redis_backend_use_ssl"] == required
