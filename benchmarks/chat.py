"""Benchmark of the chat service in a running lab (`make lab`): delivery through the reverse proxy
against the same clients connected to the service directly, and the time of a redeploy.

Prints, for each path (proxy: wss://chat.<domain> through nginx with the lab pebble's certificate
verified; direct: ws://<microservices>:8080 from the lab host, an admin source):

- latency: one message at a time from Ann to Bob in one room, p50 and p99 of the time from Ann's
  send to Bob's receive (the message is stored in PostgreSQL and fanned out through RabbitMQ);
- throughput: Ann sends a burst of messages, messages per second received by Bob;

then their ratio (proxy / direct), and the time of a redeploy of a new release (a changed copy of
the example service served from the lab's file root: fetch, build, switch, restart, health check),
then of the redeploy back. Figures are measured in this one run on this machine.

    sudo .venv/bin/python benchmarks/chat.py [--messages 300] [--burst 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sitectl import labctl  # noqa: E402
from tests.chat import wsclient  # noqa: E402

BENCH_TREE = "bench/chat"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


async def measure(base: str, room: str, messages: int, burst: int, pins=None, cafile=None) -> dict:
    async with wsclient.session(pins, cafile) as http:
        ann = await http.ws_connect(f"{base}/ws?room={room}&name=ann")
        bob = await http.ws_connect(f"{base}/ws?room={room}&name=bob")
        await wsclient.receive(ann, "history")
        await wsclient.receive(bob, "history")
        latencies = []
        for i in range(messages):
            sent = time.perf_counter()
            await ann.send_json({"body": f"latency {i}"})
            while True:
                got = await wsclient.receive(bob, "message")
                if got["message"]["body"] == f"latency {i}":
                    break
            latencies.append((time.perf_counter() - sent) * 1000)
        await drain(ann)
        start = time.perf_counter()
        for i in range(burst):
            await ann.send_json({"body": f"burst {i}"})
        received = 0
        while received < burst:
            got = await wsclient.receive(bob, "message", timeout=60)
            if got["message"]["body"].startswith("burst "):
                received += 1
        seconds = time.perf_counter() - start
        await ann.close()
        await bob.close()
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies), "msgs_per_s": burst / seconds}


async def drain(ws) -> None:
    """Ann's own copies of her messages: read until none is waiting."""
    while True:
        try:
            await wsclient.receive(ws, "message", timeout=0.5)
        except (TimeoutError, asyncio.TimeoutError):
            return


def redeploy(lab: labctl.Lab, tree: str | None) -> tuple[float, dict]:
    """Apply the chat state on its guest through the master with the source ``tree`` (None: the site's
    own), timed; returns the seconds and the release state's result."""
    import salt.client

    client = salt.client.LocalClient(mopts=lab.master_opts())
    kwargs = {"pillar": {"chat": {"source": {"tree": {"url": f"salt://{tree}"}}}}} if tree else {}
    start = time.monotonic()
    ret = client.cmd("microservices", "state.apply", ["chat"], kwarg=kwargs, timeout=900)
    seconds = time.monotonic() - start
    states = ret["microservices"]
    if not isinstance(states, dict):
        raise SystemExit(f"state.apply chat did not run: {states}")
    release = next(v for k, v in states.items() if "chat-release-deployed" in k)
    if release["result"] is not True:
        raise SystemExit(f"the redeploy failed: {release['comment']}")
    return seconds, release


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages of the latency run")
    parser.add_argument("--burst", type=int, default=1000, help="messages of the throughput run")
    args = parser.parse_args()
    lab = labctl.Lab()
    lab.configure()
    if lab.master_pid() is None:
        print("no lab is running here: `make lab` first", file=sys.stderr)
        return 2
    site = lab.pillar["site"]
    proxy = site["guests"]["reverse-proxy"]["address"].split("/")[0]
    chat = site["guests"]["microservices"]["address"].split("/")[0]
    fqdn = f"chat.{site['domain']}"
    cafile = str(lab.settings.state_dir / "lab-acme" / "pebble-root.pem")
    results = {
        "direct": asyncio.run(measure(f"ws://{chat}:8080", "bench-direct", args.messages, args.burst)),
        "proxy": asyncio.run(measure(f"wss://{fqdn}", "bench-proxy", args.messages, args.burst,
                                     {fqdn: proxy}, cafile)),
    }
    print(f"{'path':8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'msg/s':>8}")
    for path, r in results.items():
        print(f"{path:8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['mean_ms']:8.2f} {r['msgs_per_s']:8.0f}")
    d, p = results["direct"], results["proxy"]
    print(f"{'ratio':8} {p['p50_ms'] / d['p50_ms']:8.2f} {p['p99_ms'] / d['p99_ms']:8.2f} "
          f"{p['mean_ms'] / d['mean_ms']:8.2f} {p['msgs_per_s'] / d['msgs_per_s']:8.2f}  (proxy / direct)")

    staged = lab.settings.state_dir / "lab-files" / BENCH_TREE
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(ROOT / "apps" / "chat", staged)
    (staged / "BENCHMARK").write_text(f"a new release made at {time.time()}\n")
    try:
        seconds, release = redeploy(lab, BENCH_TREE)
        print(f"redeploy of a new release: {seconds:.1f} s ({release['comment']})")
        seconds, release = redeploy(lab, None)
        print(f"redeploy back to the site's release: {seconds:.1f} s ({release['comment']})")
        seconds, release = redeploy(lab, None)
        print(f"the same release again (no-op): {seconds:.1f} s ({release['comment']})")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
