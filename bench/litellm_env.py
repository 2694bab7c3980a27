"""LiteLLM's proxy, the peer the router bench compares Parley to, in a venv of its own.

`litellm[proxy]` pins a web stack and a hundred packages that must never meet the project's,
so it lives in `.state/cache/litellm/venv` (made with the project's uv, from the stack's
shared download cache, once; a marker records the pin) and runs as a subprocess with a
generated config: one model that forwards to an OpenAI-compatible server, one worker, no
database, telemetry off.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.servers.wheels import uv_binary, uv_env

#: The version measured; the pin is part of the install marker, so changing it reinstalls.
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"


def _venv(config: StackConfig) -> Path:
    return config.cache_dir / "litellm" / "venv"


def _marker(config: StackConfig) -> Path:
    return config.cache_dir / "litellm" / "installed.json"


def litellm_binary(config: StackConfig) -> Path:
    return _venv(config) / "bin" / "litellm"


def ensure_litellm(config: StackConfig) -> Path:
    """The `litellm` CLI of the bench's venv, installed the first time (about a minute)."""
    record = {"requirement": LITELLM_REQUIREMENT}
    marker = _marker(config)
    try:
        if json.loads(marker.read_text()) == record and litellm_binary(config).exists():
            return litellm_binary(config)
    except (OSError, ValueError):
        pass
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    uv, env, venv = uv_binary(), uv_env(config), _venv(config)
    log = marker.parent / "install.log"
    with log.open("ab") as out:
        for argv in (
            [uv, "venv", "--clear", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "--python", str(venv / "bin" / "python"), LITELLM_REQUIREMENT],
        ):
            print(f"bench: {' '.join(argv[:3])} ... (log: {log})", file=sys.stderr)
            subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    marker.write_text(json.dumps(record) + "\n")
    return litellm_binary(config)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LiteLLMProxy:
    """A running `litellm` proxy: one uvicorn worker in front of one OpenAI-compatible server."""

    process: subprocess.Popen[bytes]
    port: int
    model: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config_yaml(model: str, backend_base_url: str) -> str:
    """LiteLLM's config: JSON is YAML, so no YAML writer is needed."""
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    # "openai/<name>": LiteLLM's OpenAI provider, sent to api_base as <name>.
                    "model": f"openai/{model}",
                    "api_base": backend_base_url,
                    "api_key": "bench",
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True, "set_verbose": False},
        "general_settings": {},
    }
    return json.dumps(config, indent=2)


def start_litellm(
    config: StackConfig, model: str, backend_base_url: str, *, ready_timeout_s: float = 120
) -> LiteLLMProxy:
    """Start the proxy on a free loopback port and wait until it answers /v1/models."""
    binary = ensure_litellm(config)
    folder = Path(tempfile.mkdtemp(prefix="parley-bench-litellm-"))
    config_path = folder / "config.yaml"
    config_path.write_text(_config_yaml(model, backend_base_url))
    port = free_port()
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR", "USER") if key in os.environ}
    env |= {
        "LITELLM_TELEMETRY_DISABLED": "True",
        "LITELLM_LOG": "ERROR",
        # No model-cost map fetched from the network at import (there is none here).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = folder / "litellm.log"
    argv = [
        str(binary), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    proxy = LiteLLMProxy(process, port, model, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{proxy.base_url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return proxy
        except OSError:
            pass
        time.sleep(0.5)
    proxy.stop()
    raise RuntimeError(f"litellm did not answer within {ready_timeout_s} s; see {log_path}")
