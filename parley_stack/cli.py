"""`parley`: run the local stack (up, down, status, logs) and its operator commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from parley_client.chat import build_parser as chat_parser
from parley_client.chat import main as chat_main
from parley_stack.config import StackConfig
from parley_stack.progress import Progress
from parley_stack.servers import EXTRAS, TOOLS, load
from parley_stack.stack import Stack, StackError


def _config(args: argparse.Namespace) -> StackConfig:
    overrides: dict[str, object] = {}
    if getattr(args, "cassandra_nodes", None):
        overrides["cassandra_nodes"] = args.cassandra_nodes
    if getattr(args, "pulsar", None):
        overrides["pulsar"] = args.pulsar
    return StackConfig(**overrides)  # type: ignore[arg-type]


def _where(stack: Stack, console: Console) -> None:
    cfg = stack.config
    running = stack.table.all_running()
    console.print("[bold]Parley is up.[/bold]")
    if any(r.name == "envoy" for r in running):
        console.print(
            f"  public endpoint (gRPC, gRPC-Web, web page): http://{cfg.host}:{cfg.port('envoy_public')}"
        )
        console.print(
            f"  Envoy admin:                               http://{cfg.host}:{cfg.port('envoy_admin')}"
        )
    if any(r.name == "jaeger" for r in running):
        console.print(
            f"  traces (Jaeger query API):                 http://{cfg.host}:{cfg.port('jaeger_query')}"
        )
    table = Table("process", "pid", "endpoints")
    for row in running:
        endpoints = ", ".join(f"{k}={v}" for k, v in row.endpoints.items())
        table.add_row(row.name, str(row.pid), endpoints)
    console.print(table)


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack(_config(args))
    console = Console(stderr=True)
    started = time.monotonic()
    try:
        with Progress(console) as progress:
            stack.up(args.only or None, progress, extras=args.extras or ())
    except StackError as error:
        console.print(f"[red]parley up failed:[/red] {error}")
        return 1
    console.print(f"up in {time.monotonic() - started:.1f}s")
    _where(stack, Console())
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        names = Stack(_config(args)).install(args.only or None)
    except (RuntimeError, OSError) as error:
        print(f"parley install failed: {error}", file=sys.stderr)
        return 1
    print(f"installed {', '.join(names)} in {time.monotonic() - started:.1f}s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stack = Stack(_config(args))
    stopped = stack.down(args.only or None)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = Stack(_config(args))
    rows = stack.status()
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return 0
    table = Table("server", "process", "state", "pid", "endpoints")
    for row in rows:
        endpoints = ", ".join(f"{k}={v}" for k, v in row.endpoints.items())
        table.add_row(row.server, row.name, row.state, str(row.pid or ""), endpoints)
    Console().print(table)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    path = StackConfig().log_path(args.name)
    if not path.exists():
        print(f"no log for {args.name} at {path}", file=sys.stderr)
        return 1
    if not args.follow:
        lines = path.read_text(errors="replace").splitlines()[-args.lines :]
        print("\n".join(lines))
        return 0
    os.execvp("tail", ["tail", "-n", str(args.lines), "-F", str(path)])  # noqa: S606,S607


def cmd_tool(args: argparse.Namespace) -> int:
    if args.name not in TOOLS:
        print(f"unknown tool {args.name!r}; known: {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    tool = load(args.name, StackConfig())
    if not tool.is_installed():
        with Progress() as progress:
            tool.install(progress)
    binary = str(getattr(tool, "binary"))  # noqa: B009 - every tool has one; Server does not
    os.execv(binary, [binary, *args.args])  # noqa: S606


def cmd_admin(args: argparse.Namespace) -> int:
    """svc_session's out-of-band admin command, with the running stack's settings."""
    service = load("svc_session", StackConfig())
    env = {**os.environ, **service.environment()}  # type: ignore[attr-defined]
    argv = [sys.executable, "-m", "svc_session", "admin", args.admin_command, args.email]
    os.execve(sys.executable, argv, env)  # noqa: S606


def cmd_reindex(args: argparse.Namespace) -> int:
    """svc_history's reindex command, with the running stack's settings."""
    service = load("svc_history", StackConfig())
    env = {**os.environ, **service.environment()}  # type: ignore[attr-defined]
    which = ["--user", args.user] if args.user else ["--all", "--run", args.run]
    argv = [sys.executable, "-m", "svc_history", "reindex", *which]
    os.execve(sys.executable, argv, env)  # noqa: S606


def cmd_chat(args: argparse.Namespace) -> int:
    """The terminal client; it is no part of the stack, only dispatched from here."""
    return chat_main(args=args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Run Parley's local stack.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="install what is missing and start the stack")
    up.add_argument("--only", nargs="+", metavar="NAME", help="start only these (and what they need)")
    up.add_argument("--cassandra-nodes", type=int, choices=(1, 3), help="Cassandra ring size")
    up.add_argument("--pulsar", choices=("lite", "apache"), help="which Pulsar broker to run")
    up.add_argument(
        "--with",
        dest="extras",
        action="append",
        choices=sorted(EXTRAS),
        metavar="EXTRA",
        help="also run an extra: tracing (Jaeger; every service exports its spans to it)",
    )
    up.set_defaults(func=cmd_up)

    install = sub.add_parser("install", help="download and build what is missing; start nothing")
    install.add_argument("--only", nargs="+", metavar="NAME")
    install.add_argument("--pulsar", choices=("lite", "apache"), help="which Pulsar broker to install")
    install.set_defaults(func=cmd_install)

    down = sub.add_parser("down", help="stop everything the stack started")
    down.add_argument("--only", nargs="+", metavar="NAME")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="what runs, with pids and endpoints")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="print a process's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=200)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)
    tool = sub.add_parser("tool", help="run a stack tool (buf, kubectl, ghz, grpcurl), installing it first")
    tool.add_argument("name")
    tool.add_argument("args", nargs=argparse.REMAINDER)
    tool.set_defaults(func=cmd_tool)

    chat = sub.add_parser("chat", help="chat from a terminal through the public endpoint")
    chat_parser(chat).set_defaults(func=cmd_chat)

    admin = sub.add_parser("admin", help="operator commands against the running stack")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    grant = admin_sub.add_parser("grant", help="make the account with this (verified) email an admin")
    grant.add_argument("email")
    grant.set_defaults(func=cmd_admin)
    reindex = admin_sub.add_parser("reindex", help="rebuild the search index from Cassandra (resumable)")
    which = reindex.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="one user's id (or users/{user})")
    which.add_argument("--all", action="store_true", help="every user")
    reindex.add_argument("--run", default="all", help="with --all: the run's name; the same name resumes it")
    reindex.set_defaults(func=cmd_reindex)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
