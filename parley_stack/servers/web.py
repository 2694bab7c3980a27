"""The web app's files, built with npm and served on loopback for Envoy.

Envoy is the only way in: it routes GET and HEAD of every path that is not a gRPC method
to this server and adds the security headers itself (edge_proxy/envoy.yaml.tmpl). The
server is Python's http.server with four changes: the types a strict browser needs
(`text/javascript`, `text/css`, whatever /etc/mime.types says), no directory listings,
`Cache-Control: no-store` on errors, and the page (index.html) for the app's own paths
(`/reset-password?token=...` from a mail, a reload), which it routes in the browser.

`install` builds only when the app's sources changed: a SHA-256 over the files that feed
`npm run build`, kept as a stamp in the cache. `npm ci` runs only when the lock file changed.
Each build goes to its own folder named by that hash (written aside, then renamed into
place), so a stack that rebuilds never pulls files from under another stack's server.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from parley_stack.config import REPO_ROOT
from parley_stack.progress import Progress
from parley_stack.servers.base import ProcessSpec, Server, http_ok

WEB_DIR = REPO_ROOT / "web"

#: Files and folders of web/ whose content decides the build (node_modules and dist do not).
BUILD_INPUTS = (
    "package.json",
    "package-lock.json",
    "index.html",
    "vite.config.ts",
    "tsconfig.json",
    "src",
    "public",
)

#: What decides the installed packages.
DEPENDENCY_INPUTS = ("package.json", "package-lock.json")

#: Content types by suffix, ahead of the system's table: a browser with `nosniff` runs a
#: script only when it is a JavaScript type, and applies a style only as text/css.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}


def _files(root: Path, names: tuple[str, ...]) -> Iterator[Path]:
    for name in names:
        path = root / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def content_hash(root: Path, names: tuple[str, ...]) -> str:
    """SHA-256 over the relative path and content of every file under names (missing: none)."""
    digest = hashlib.sha256()
    for path in _files(root, names):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class WebServer(Server):
    name = "web"

    #: Builds kept beside the current one (other stacks may still serve them).
    KEEP_BUILDS = 4

    @property
    def _builds(self) -> Path:
        return self.cache / "builds"

    def _build_dir(self, sources: str) -> Path:
        return self._builds / sources[:16]

    @property
    def dist(self) -> Path:
        """The current build: the folder of the sources' hash in the stamp."""
        return self._build_dir(self._read(self._build_stamp) or "none")

    @property
    def _build_stamp(self) -> Path:
        return self.cache / "build.sha256"

    @property
    def _deps_stamp(self) -> Path:
        return self.cache / "dependencies.sha256"

    @staticmethod
    def _read(stamp: Path) -> str:
        try:
            return stamp.read_text().strip()
        except OSError:
            return ""

    def _dependencies_current(self, dependencies: str) -> bool:
        """True when web/node_modules was installed from these package files: by this
        server (its stamp) or by the Makefile's `web-deps` (a `.installed` newer than both).
        `npm ci` empties node_modules first, so it runs only when it must."""
        if self._read(self._deps_stamp) == dependencies and (WEB_DIR / "node_modules").is_dir():
            return True
        made = WEB_DIR / "node_modules" / ".installed"
        if not made.is_file():
            return False
        newest = max((WEB_DIR / name).stat().st_mtime for name in DEPENDENCY_INPUTS)
        return made.stat().st_mtime >= newest

    def is_installed(self) -> bool:
        return (self.dist / "index.html").is_file() and self._read(self._build_stamp) == content_hash(
            WEB_DIR, BUILD_INPUTS
        )

    def install(self, progress: Progress) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to build the web app (web/); install Node.js 20 or newer")
        if not (WEB_DIR / "package.json").is_file():
            raise RuntimeError(f"{WEB_DIR / 'package.json'} is missing: no web app to build")
        env = {**os.environ, "npm_config_cache": str(self.config.cache_dir / "npm")}
        log_path = self.config.log_path("web-build")
        dependencies = content_hash(WEB_DIR, DEPENDENCY_INPUTS)
        if not self._dependencies_current(dependencies):
            progress.run(
                "web: npm ci",
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=WEB_DIR,
                env=env,
                log_path=log_path,
            )
            self._deps_stamp.write_text(dependencies)
            # The Makefile's stamp for the same `npm ci` (its `web-deps`), so it does not redo it.
            (WEB_DIR / "node_modules" / ".installed").touch()
        # Hashed before the build: a file edited during it makes the next `up` build again.
        sources = content_hash(WEB_DIR, BUILD_INPUTS)
        target = self._build_dir(sources)
        if not (target / "index.html").is_file():
            aside = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            shutil.rmtree(aside, ignore_errors=True)
            # `npm run build` is `tsc --noEmit && vite build`: the options reach vite.
            argv = [npm, "run", "build", "--", "--outDir", str(aside), "--emptyOutDir"]
            progress.run("web: npm run build", argv, cwd=WEB_DIR, env=env, log_path=log_path)
            if not (aside / "index.html").is_file():
                raise RuntimeError(f"npm run build wrote no {aside / 'index.html'}; see {log_path}")
            shutil.rmtree(target, ignore_errors=True)
            aside.rename(target)
        self._build_stamp.write_text(sources)
        self._prune(keep=target)

    def _prune(self, keep: Path) -> None:
        """Remove all but the newest few builds (and any left half-written)."""
        builds = sorted(
            (path for path in self._builds.iterdir() if path.is_dir() and path != keep),
            key=lambda path: path.stat().st_mtime,
            reverse=True,
        )
        for old in builds[self.KEEP_BUILDS - 1 :]:
            shutil.rmtree(old, ignore_errors=True)

    def processes(self) -> list[ProcessSpec]:
        host, port = self.config.host, self.config.port("web_http")
        argv = [
            sys.executable, "-m", "parley_stack.servers.web",
            "--bind", host,
            "--directory", str(self.dist),
            str(port),
        ]  # fmt: skip
        return [
            ProcessSpec(
                name="web",
                argv=argv,
                cwd=REPO_ROOT,
                env={"PYTHONUNBUFFERED": "1"},
                ready=lambda: http_ok(f"http://{host}:{port}/"),
                endpoints={"http": f"{host}:{port}"},
                ready_timeout_s=30,
                stop_timeout_s=5,
            )
        ]


class StaticFiles(http.server.SimpleHTTPRequestHandler):
    """http.server's file handler with explicit content types, no directory listings, the
    page for the app's paths, and errors that no cache keeps (Envoy adds Cache-Control to a
    bundle only where none is set)."""

    _status = 200

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        if self._status >= 400:
            self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        """The file for path; a path of the app's own (`/reset-password`, `/c/123`: no such
        file, not under /assets/, no suffix) is the page, which routes it in the browser."""
        found = super().translate_path(path)
        route = path.split("?", 1)[0].split("#", 1)[0]
        if os.path.exists(found) or route.startswith("/assets/") or "." in route.rsplit("/", 1)[-1]:
            return found
        return os.path.join(self.directory, "index.html")

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return CONTENT_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        # A folder without an index.html is not a page.
        self.send_error(http.HTTPStatus.NOT_FOUND, "File not found")
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the web app's built files on one address.")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    handler = partial(StaticFiles, directory=str(args.directory))
    with http.server.ThreadingHTTPServer((args.bind, args.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
