"""A real Kubernetes API server (kube-apiserver over etcd) to validate k8s/ against.

Neither ships as a package this machine can install, so both are built from their Go
modules through a small wrapper module each (docs/stack/kubernetes.md):

- kube-apiserver: `k8s.io/kubernetes` cannot be required as it stands, because its go.mod
  replaces every `k8s.io/*` staging module with a folder of its own tree. The wrapper
  requires it and replaces each of those modules with its published `v0.<minor>.<patch>`
  release instead; its main is a copy of `cmd/kube-apiserver`'s.
- etcd: a main that calls `etcdmain.Main`.

They are tools (installed by `parley install`, never started by `parley up`); the tests
start a private pair on loopback with `ApiServer`, and `kubectl apply --server-side
--dry-run=server` the overlays against it. Only admission and validation run; nothing is
scheduled, because there is no scheduler, controller manager or kubelet.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server
from parley_stack.servers.gobuild import go_binary, go_env, module_info

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"

#: The Go version the wrapper modules declare; the modules they require may raise it.
_GO_DIRECTIVE = "1.25.0"

#: `cmd/kube-apiserver` sets these through its Makefile; without them the server reports
#: v0.0.0 and kubectl cannot parse the server's version.
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


def _staging_version(kubernetes_version: str) -> str:
    """The staging modules' tag for a Kubernetes release: v1.37.2 -> v0.37.2."""
    return "v0." + kubernetes_version.removeprefix("v1.")


def _version_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in _VERSION_PACKAGES:
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def staging_replacements(kubernetes_go_mod: str, version: str) -> dict[str, str]:
    """module -> release for every `k8s.io/x => ./staging/src/k8s.io/x` in kubernetes' go.mod."""
    found = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\1\s*$", kubernetes_go_mod, re.M)
    if not found:
        raise RuntimeError("kubernetes' go.mod lists no staging modules to replace")
    return dict.fromkeys(found, _staging_version(version))


class _GoWrapperBuild(Server):
    """A binary built from a generated wrapper module: installed, never started."""

    version: str
    binary_name: str

    @property
    def binary(self) -> Path:
        """One folder per version, so a version bump rebuilds."""
        return self.cache / self.version / "bin" / self.binary_name

    def is_installed(self) -> bool:
        return self.binary.is_file()

    def processes(self) -> list[ProcessSpec]:
        return []

    def _wrapper(self, env: dict[str, str]) -> tuple[str, str]:
        """(go.mod, main.go) of the wrapper module."""
        raise NotImplementedError

    def _ldflags(self) -> str:
        return "-s -w"

    def install(self, progress: Progress) -> None:
        if self.is_installed():
            return
        env = go_env(self.config, cgo=False)
        go = go_binary()
        log_path = self.cache / f"build-{self.version}.log"
        staging = self.cache / f".{self.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            go_mod, main_go = self._wrapper(env)
            (staging / "go.mod").write_text(go_mod)
            (staging / "main.go").write_text(main_go)
            progress.run(
                f"go mod tidy ({self.name})", [go, "mod", "tidy"], cwd=staging, env=env, log_path=log_path
            )
            progress.run(
                f"go build {self.name}@{self.version}",
                [go, "build", "-trimpath", "-ldflags", self._ldflags(), "-o", self.binary_name, "."],
                cwd=staging,
                env=env,
                log_path=log_path,
            )
            self.binary.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / self.binary_name, self.binary)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class KubeApiserverTool(_GoWrapperBuild):
    """kube-apiserver, built from k8s.io/kubernetes with its staging modules from releases."""

    name = "kube-apiserver"
    version = KUBERNETES_VERSION
    binary_name = "kube-apiserver"

    def _wrapper(self, env: dict[str, str]) -> tuple[str, str]:
        info = module_info(go_binary(), "k8s.io/kubernetes", self.version, env)
        replacements = staging_replacements(Path(info["GoMod"]).read_text(), self.version)
        main_go = (Path(info["Dir"]) / "cmd" / "kube-apiserver" / "apiserver.go").read_text()
        replace = "\n".join(
            f"\t{module} => {module} {release}" for module, release in sorted(replacements.items())
        )
        go_mod = (
            "module parley.local/kube-apiserver\n\n"
            f"go {_GO_DIRECTIVE}\n\n"
            f"require k8s.io/kubernetes {self.version}\n\n"
            f"replace (\n{replace}\n)\n"
        )
        return go_mod, main_go

    def _ldflags(self) -> str:
        return _version_ldflags(self.version)


class EtcdTool(_GoWrapperBuild):
    """etcd, the API server's store."""

    name = "etcd"
    version = ETCD_VERSION
    binary_name = "etcd"

    def _wrapper(self, env: dict[str, str]) -> tuple[str, str]:
        go_mod = (
            "module parley.local/etcd\n\n"
            f"go {_GO_DIRECTIVE}\n\n"
            f"require go.etcd.io/etcd/server/v3 {self.version}\n"
        )
        main_go = (
            "// The etcd server: what etcd's own main does.\n"
            "package main\n\n"
            'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() {\n\tetcdmain.Main(os.Args)\n}\n"
        )
        return go_mod, main_go


class ApiServer:
    """A private etcd and kube-apiserver on loopback, for server-side dry runs; a context manager.

    Ports are picked free; everything (data, certificates, keys, the kubeconfig) lives in a
    temporary folder removed on exit. Ready in about 5 s; about 275 MB (API server) and
    45 MB (etcd) resident.
    """

    def __init__(self, etcd: Path, kube_apiserver: Path, workdir: Path) -> None:
        self._etcd = etcd
        self._apiserver = kube_apiserver
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.token = base64.urlsafe_b64encode(os.urandom(24)).decode()
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> ApiServer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _spawn(self, name: str, argv: list[str]) -> None:
        # The child keeps its own copy of the file descriptor.
        with (self.workdir / f"{name}.log").open("wb") as log:
            self._processes.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            )

    def _start(self) -> None:
        client, peer, secure = _free_port(), _free_port(), _free_port()
        self._spawn(
            "etcd",
            [
                str(self._etcd),
                "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                "--log-level", "warn",
                "--quota-backend-bytes", str(512 * 1024 * 1024),
            ],
        )  # fmt: skip
        key = self.workdir / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)  # noqa: S607
        (self.workdir / "tokens.csv").write_text(f'{self.token},parley-admin,1,"system:masters"\n')
        self._spawn(
            "kube-apiserver",
            [
                str(self._apiserver),
                "--etcd-servers", f"http://127.0.0.1:{client}",
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(secure),
                "--cert-dir", str(self.workdir / "certs"),
                "--service-account-key-file", str(key),
                "--service-account-signing-key-file", str(key),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-cluster-ip-range", "10.96.0.0/16",
                "--token-auth-file", str(self.workdir / "tokens.csv"),
                "--authorization-mode", "RBAC",
                "--endpoint-reconciler-type", "none",
                "--enable-priority-and-fairness=false",
                "--watch-cache=false",
            ],
        )  # fmt: skip
        self.server = f"https://127.0.0.1:{secure}"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {"server": self.server, "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": self.token}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
                    "current-context": "local",
                }
            )
        )
        self._wait_ready(timeout_s=120)

    def _wait_ready(self, timeout_s: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(  # noqa: S310 - an https URL on loopback
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args!r} exited; see {self.workdir}")
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as reply:  # noqa: S310
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout_s} s; see {self.workdir}")

    def close(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
