"""The chat turn: what svc_router adds to a model's stream, against straight calls and LiteLLM.

Every number comes from one run on this machine. Two scripted backends, so that no model's
own cost is in the numbers: Triton's parley-scripted (`model_repo/README.md`) and
scripted-openai (`bench/scripted_openai.py`, a double of an OpenAI-compatible server that
answers exactly as parley-scripted does). Each turn is scripted by a directive in its user
message (`[scripted ttft_ms=.. tokens_per_second=.. reply_tokens=..]`), so every path
carries the same text and the backend paces every path alike.

Paths ("targets"), each a client in this process:
- `triton`: straight to Triton (`tritonclient.grpc.aio` stream_infer, one stream per turn,
  as the router's Triton backend calls it).
- `parley-triton`: through svc_router (`ChatService.StreamTurn`, a real user's token) to
  the catalog model `bench-triton` (Triton, parley-scripted).
- `openai`: straight to scripted-openai (aiohttp, streamed SSE).
- `litellm`: through LiteLLM's proxy (`litellm[proxy]` in a venv of its own,
  `bench/litellm_env.py`: one worker, master key, no database, telemetry off) to the same
  scripted-openai.
- `parley-openai`: through svc_router to the catalog model `bench-openai` (kind "openai",
  the same scripted-openai).
Parley is measured at the router's own port (not through Envoy): the router as the stack
runs it (`python -m svc_router`, its stack environment), with a bench catalog, an
endpoint for scripted-openai and tier limits that never throttle the bench. A Parley turn
does what a real one does: admission (Redis), the user message stored in svc_history
(Cassandra) before the backend is called, the turn log, the assistant message and the
usage event; each turn runs in a conversation that holds at most `--turns-per-conversation`
turns, made before the turn's clock starts.

What each number means:
- TTFT: request sent -> first content token received (Parley: the first TextDelta; the
  TurnStarted event before it does not count). Inter-token latency (ITL): the gap between
  two content tokens of one stream. Both in ms, p50 and p99 (nearest rank).
- "added": the proxy's value minus the straight path's, measured in the same run, in
  alternating rounds (straight, proxy, straight, proxy, ...) so drift hits both alike:
  `parley-triton` against `triton`; `parley-openai` and `litellm` against `openai`.
- `router_ttft_mean_ms`, `router_added_ttft_mean_ms` (Parley paths; "router +TTFT" in the
  table): the router's own histograms over the same windows, means: TTFT from the request's
  arrival, and the part of it that is not the backend's own wait for its first event
  (admission, storing the user message, reading the context, counting tokens).
- `latency`: N concurrent streams (`--levels`, default 1, 50, 200) each running turns back
  to back (`--ttft-ms`, `--pace` tokens/s, `--reply-tokens`); the streams start spread over
  one turn, and only what happens inside the measuring window counts (turns still running
  when it closes are cancelled: CancelTurn for Parley, a closed connection for HTTP).
- `saturation`: unpaced streams (`tokens_per_second=0`: the backend sends as fast as the
  path takes them), `--flood-streams` of them; tokens/s delivered to the client, and the
  ratio proxy / straight. `proxy_cpu_ms_per_1k_tokens` is the proxy process's own CPU per
  thousand tokens (the cost that does not depend on who else shares the cores).
- `sweep`: paced streams (`--sweep-pace`, long replies) at increasing counts
  (`--sweep`); `max_streams_itl_p99_under_5ms` is the largest count up to which the added
  ITL p99 stayed under 5 ms at every step (the sweep of a target stops after its first
  step over). `offered_tokens_per_s` is what the streams would get at their pace; a
  straight path that delivers much less was limited by the client or backend, not the proxy.
- `idle_memory`: `--idle-streams` turns opened and left waiting for a first token (60 s
  TTFT), after a warm-up; RSS growth of the proxy's process over their count, KiB per
  stream. Measured before the load phases, and once per process (a second measure in the
  same process reuses what the first freed): the router's with `parley-openai`, beside
  LiteLLM on the same backend.
- `cpu_s`: CPU seconds of each process (its children included: Triton's model stub) inside
  each window, from /proc; `client` is this process. `backend_direct` in `saturation` is
  scripted-openai's own throughput straight from this client, so a reader can see that the
  double is not the limit.

This machine has 2 cores: the client (this process, one event loop), the backend, the
proxy and for Parley svc_history, Redis and Cassandra share them, so absolute numbers are
lower bounds of what each part does alone; the ratios and added latencies compare paths
under the same sharing. The CPU seconds per process say who used the cores.

The bench's router runs with `abandon_grace_s = 0`: a window ends by dropping its streams,
and a turn has no name to cancel (TurnStarted) before its first token, so with the default
grace a turn still waiting would stream on into the next window. Turns with a name are
cancelled with CancelTurn. `streams_left_open_after_cancel` counts the backend streams a
proxy still held 3 s after its clients left (ended by the bench before the next window).

Run (about 8 min once the stack is up):
`PARLEY_TEST_PORT_OFFSET=9000 .venv/bin/python -m bench.router_bench`
A quick run (about 3 min): `... --round-s 2 --rounds 1 --single-round-s 3 --sweep 5,10,25,50,100`;
more samples: `--round-s 10 --rounds 3`; only some paths: `--targets triton,parley-triton`.
Starts what it needs at port offset 1000, or PARLEY_TEST_PORT_OFFSET (`--keep-stack` leaves
it running for the next run); installs LiteLLM into `.state/cache/litellm` the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from tritonclient.grpc.aio import InferenceServerClient

from bench._measure import json_ready
from bench._router_load import BASELINE, Processes, compare, drive, idle_memory, rounds, sweep
from bench._router_paths import OpenAIStream, ParleyChat, Script, Target, TritonDirect
from bench._router_report import table
from bench._router_stack import (
    OPENAI_MODEL,
    SCRIPTED_OPENAI_MODEL,
    TRITON_MODEL,
    bench_catalog,
    register_users,
    router_spec,
    start,
)
from bench.litellm_env import LITELLM_REQUIREMENT, free_port, litellm_proxy
from bench.scripted_openai import scripted_openai_spec
from parley_core.logging import configure_logging
from parley_stack.config import StackConfig
from parley_stack.testing import LocalStack, test_port_offset

ALL_TARGETS = ("triton", "parley-triton", "openai", "litellm", "parley-openai")
#: The proxies' processes, whose memory and CPU are the subject.
PROXY_PROCESS = {"parley-triton": "router", "parley-openai": "router", "litellm": "litellm"}


# The run ------------------------------------------------------------------------------------


@dataclass
class Options:
    targets: list[str]
    levels: list[int]
    round_s: float
    single_round_s: float
    rounds: int
    ttft_ms: int
    pace: float
    reply_tokens: int
    flood_streams: int
    flood_reply_tokens: int
    sweep: list[int]
    sweep_paths: list[str]
    sweep_pace: float
    sweep_reply_tokens: int
    sweep_s: float
    idle_streams: int
    users: int
    turns_per_conversation: int
    keep_stack: bool


async def run(options: Options) -> dict[str, Any]:
    config = StackConfig(port_offset=test_port_offset())
    stack = LocalStack(config, reuse=options.keep_stack)
    table = stack.stack.table
    wanted = set(options.targets)
    parley = bool(wanted & {"parley-triton", "parley-openai"})
    needs = {"triton"} if wanted & {"triton", "parley-triton"} else set()
    if parley:
        needs |= {"triton", "redis", "cassandra", "pulsar", "svc_session", "svc_history"}
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "port_offset": config.port_offset},
        "litellm": LITELLM_REQUIREMENT,
        "options": vars(options),
    }
    procs = Processes()
    started: list[str] = []
    async_closers: list[Callable[[], Awaitable[object]]] = []
    try:
        if needs:
            await asyncio.to_thread(stack.ensure, *sorted(needs))
        for name in ("triton", "svc_history", "svc_session", "cassandra-1", "redis", "pulsar"):
            running = table.running(name)
            if running is not None and (name == "triton" or parley):
                procs.add(name, running.pid)
        host = config.host
        openai_port = free_port()
        backend = (host, openai_port)
        targets: dict[str, Target] = {}
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )
        async_closers.append(http.close)
        if wanted & {"openai", "litellm", "parley-openai"}:
            spec = scripted_openai_spec("scripted-openai-bench", host, openai_port, SCRIPTED_OPENAI_MODEL)
            procs.add("scripted_openai", await asyncio.to_thread(start, table, spec, "scripted-openai"))
            started.append(spec.name)
            base_url = f"http://{host}:{openai_port}/v1"
            targets["openai"] = OpenAIStream("openai", http, base_url, "none", SCRIPTED_OPENAI_MODEL, backend)
        if "litellm" in wanted:
            proxy = await asyncio.to_thread(
                litellm_proxy, config, "litellm-bench", free_port(), SCRIPTED_OPENAI_MODEL,
                f"http://{host}:{openai_port}/v1",
            )  # fmt: skip
            procs.add("litellm", await asyncio.to_thread(start, table, proxy.spec, "litellm"))
            started.append(proxy.spec.name)
            targets["litellm"] = OpenAIStream(
                "litellm", http, proxy.base_url, proxy.api_key, proxy.model, backend
            )
        if wanted & {"triton", "parley-triton"}:
            triton = InferenceServerClient(url=f"{host}:{config.port('triton_grpc')}")
            async_closers.append(triton.close)
            targets["triton"] = TritonDirect(triton, "parley-scripted")
        if parley:
            catalog = config.data_dir("router-bench") / "catalog.toml"
            catalog.write_text(bench_catalog())
            spec = router_spec(config, catalog, f"http://{host}:{openai_port}/v1")
            procs.add("router", await asyncio.to_thread(start, table, spec, "svc_router"))
            started.append(spec.name)
            users = await register_users(f"{host}:{config.port('session_grpc')}", options.users)
            # A few connections, as several clients would open; grpc would share one otherwise.
            channels = [
                grpc.aio.insecure_channel(
                    spec.endpoints["grpc"], options=[("grpc.use_local_subchannel_pool", 1)]
                )
                for _ in range(4)
            ]
            history = grpc.aio.insecure_channel(f"{host}:{config.port('history_grpc')}")
            for channel in (*channels, history):
                async_closers.append(channel.close)
            for name, model, upstream in (
                ("parley-triton", TRITON_MODEL, None),
                ("parley-openai", OPENAI_MODEL, backend),
            ):
                if name in wanted:
                    chat = ParleyChat(
                        name, channels, history, users, model, options.turns_per_conversation, upstream
                    )
                    chat.metrics_url = f"http://{spec.endpoints['metrics']}/metrics"
                    targets[name] = chat
        # The targets in the order asked, straight paths first within each pair.
        order = [t for t in ALL_TARGETS if t in wanted and t in targets]
        chosen = [targets[t] for t in order]
        log = _progress

        log(f"warm-up: {', '.join(order)}")
        warm = Script(options.ttft_ms, options.pace * 5, options.reply_tokens)
        for target in chosen:
            result = await drive(target, 8, warm, 2.0, procs)
            if result["errors"]:
                log(f"  {target.name}: warm-up errors {result['errors']}")

        # One measure per proxy process: a second one in the same process would reuse what the
        # first freed. The router's is taken with parley-openai, beside LiteLLM on the same backend.
        results["idle_memory"] = {}
        measured_processes: set[str] = set()
        for name in ("parley-openai", "litellm", "parley-triton"):
            process = PROXY_PROCESS[name]
            if options.idle_streams > 0 and name in order and process not in measured_processes:
                measured_processes.add(process)
                log(f"idle memory: {name}, {options.idle_streams} streams")
                results["idle_memory"][name] = await idle_memory(
                    targets[name], process, options.idle_streams, procs
                )

        script = Script(options.ttft_ms, options.pace, options.reply_tokens)
        results["latency"] = {"script": vars(script) | {"text": script.text()}}
        for level in options.levels:
            log(f"latency: {level} streams")
            # One stream runs few turns in a window: it gets a longer one.
            seconds = max(options.round_s, options.single_round_s if level == 1 else 0.0)
            measured = await rounds(chosen, level, script, seconds, options.rounds, procs)
            results["latency"][str(level)] = {"paths": measured, "added": compare(measured)}

        if options.flood_streams > 0:
            flood = Script(options.ttft_ms, 0, options.flood_reply_tokens)
            log(f"saturation: {options.flood_streams} unpaced streams")
            measured = await rounds(
                chosen, options.flood_streams, flood, options.round_s, options.rounds, procs
            )
            saturation: dict[str, Any] = {"script": vars(flood), "paths": measured}
            for path, straight in BASELINE.items():
                if path in measured and straight in measured:
                    tokens = measured[path]["tokens_per_s"] * options.round_s * options.rounds
                    cpu = measured[path]["cpu_s"].get(PROXY_PROCESS[path], math.nan)
                    saturation[path] = {
                        "tokens_per_s": measured[path]["tokens_per_s"],
                        "straight_tokens_per_s": measured[straight]["tokens_per_s"],
                        "ratio": measured[path]["tokens_per_s"] / measured[straight]["tokens_per_s"],
                        "proxy_cpu_ms_per_1k_tokens": cpu * 1000 / (tokens / 1000) if tokens else math.nan,
                    }
            if "openai" in measured:
                saturation["backend_direct"] = {
                    "tokens_per_s": measured["openai"]["tokens_per_s"],
                    "backend_cpu_s": measured["openai"]["cpu_s"].get("scripted_openai"),
                    "client_cpu_s": measured["openai"]["cpu_s"].get("client"),
                    "seconds": options.round_s * options.rounds,
                }
            results["saturation"] = saturation

        if options.sweep:
            log(f"sweep: {options.sweep} streams")
            paced = Script(options.ttft_ms, options.sweep_pace, options.sweep_reply_tokens)
            swept = {n: targets[n] for n in options.sweep_paths if n in targets}
            swept |= {BASELINE[n]: targets[BASELINE[n]] for n in swept if BASELINE[n] in targets}
            results["sweep"] = {"script": vars(paced)} | await sweep(
                swept, options.sweep, paced, options.sweep_s, procs
            )
        results["streams_left_open_after_cancel"] = {
            t.name: sum(t.left_open) for t in chosen if isinstance(t, OpenAIStream | ParleyChat)
        }
        results["client_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        for close in reversed(async_closers):
            with contextlib.suppress(Exception):
                await close()
        for name in reversed(started):
            await asyncio.to_thread(table.stop, name)
        if not options.keep_stack:
            await asyncio.to_thread(stack.close)
    return results


def _progress(message: str) -> None:
    print(f"bench: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="paths to measure, comma-separated")
    parser.add_argument("--levels", type=_ints, default=[1, 50, 200], help="concurrent streams for latency")
    parser.add_argument("--round-s", type=float, default=3.0, help="seconds of one measuring window")
    parser.add_argument("--single-round-s", type=float, default=8.0, help="window at 1 stream")
    parser.add_argument("--rounds", type=int, default=2, help="alternating windows per path and level")
    parser.add_argument("--ttft-ms", type=int, default=20, help="the backend's time to first token")
    parser.add_argument("--pace", type=float, default=5.0, help="tokens/s of one stream (latency)")
    parser.add_argument("--reply-tokens", type=int, default=10, help="tokens of one reply (latency)")
    parser.add_argument("--flood-streams", type=int, default=32, help="unpaced streams; 0 skips")
    parser.add_argument("--flood-reply-tokens", type=int, default=200)
    parser.add_argument(
        "--sweep", type=_ints, default=[5, 10, 25, 50, 100, 200, 400, 800], help="'' skips the sweep"
    )
    parser.add_argument("--sweep-paths", default="parley-openai,litellm", help="proxies in the sweep")
    parser.add_argument("--sweep-pace", type=float, default=10.0, help="tokens/s of one stream (sweep)")
    parser.add_argument("--sweep-reply-tokens", type=int, default=100)
    parser.add_argument("--sweep-s", type=float, default=4.0, help="seconds of one sweep window")
    parser.add_argument("--idle-streams", type=int, default=200, help="0 skips")
    parser.add_argument("--users", type=int, default=8, help="Parley users the streams take turns as")
    parser.add_argument("--turns-per-conversation", type=int, default=10)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(ALL_TARGETS)}")
    options = Options(
        targets=targets, levels=args.levels, round_s=args.round_s, single_round_s=args.single_round_s,
        rounds=args.rounds,
        ttft_ms=args.ttft_ms, pace=args.pace, reply_tokens=args.reply_tokens,
        flood_streams=args.flood_streams, flood_reply_tokens=args.flood_reply_tokens, sweep=args.sweep,
        sweep_paths=[p.strip() for p in args.sweep_paths.split(",") if p.strip()],
        sweep_pace=args.sweep_pace, sweep_reply_tokens=args.sweep_reply_tokens, sweep_s=args.sweep_s,
        idle_streams=args.idle_streams, users=args.users, turns_per_conversation=args.turns_per_conversation,
        keep_stack=args.keep_stack,
    )  # fmt: skip
    configure_logging("console", "warning")
    results = asyncio.run(run(options))
    print(table(results))
    print(json.dumps(json_ready(results, places=3), indent=2))


if __name__ == "__main__":
    main()
