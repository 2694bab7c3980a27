"""LiteLLM's proxy, the peer the router bench compares Parley to, in a venv of its own.

`litellm[proxy]` pins a web stack and a hundred packages that must never meet the project's,
so it lives in `.state/cache/litellm/venv` (made with the project's uv, from the stack's
shared download cache, once; a marker records the pin) and runs as a subprocess with a
generated config: one model that forwards to an OpenAI-compatible server, one worker, no
database, telemetry off.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from parley_stack.config import StackConfig
from parley_stack.servers.base import ProcessSpec
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


@dataclass(frozen=True)
class LiteLLMProxy:
    """LiteLLM's proxy as a process of the local stack: one uvicorn worker, one model."""

    spec: ProcessSpec
    host: str
    port: int
    model: str
    #: The master key: clients send it as `Authorization: Bearer ...`.
    api_key: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def _config_yaml(model: str, backend_base_url: str, master_key: str) -> str:
    """LiteLLM's config: JSON is YAML, so no YAML writer is needed.

    A master key and no database: every request's key is compared with it (LiteLLM refuses
    to start without one), as Parley checks every request's token.
    """
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
        # No retries: the bench ends windows by dropping streams (and ends what a proxy keeps
        # streaming after its client left); a retry would reopen them into the next window.
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": master_key},
    }
    return json.dumps(config, indent=2)


def _answers(url: str, key: str) -> bool:
    probe = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(probe, timeout=2) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def litellm_proxy(
    config: StackConfig, name: str, port: int, model: str, backend_base_url: str
) -> LiteLLMProxy:
    """The proxy's process (installed first if need be), its config written beside its data."""
    binary = ensure_litellm(config)
    folder = config.data_dir(name)
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config_path = folder / "config.yaml"
    config_path.write_text(_config_yaml(model, backend_base_url, master_key))
    host = config.host
    env = {
        "LITELLM_TELEMETRY_DISABLED": "True",
        "LITELLM_LOG": "ERROR",
        # The model-cost map that ships with the package; none is fetched at start-up.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [
        str(binary), "--config", str(config_path), "--host", host, "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    url = f"http://{host}:{port}/v1/models"
    spec = ProcessSpec(
        name=name,
        argv=argv,
        ready=lambda: _answers(url, master_key),
        env=env,
        cwd=folder,
        endpoints={"http": f"{host}:{port}"},
        ready_timeout_s=120,
        stop_timeout_s=10,
    )
    return LiteLLMProxy(spec, host, port, model, master_key)
