"""Benchmark of the chat service in the scratch lab: delivery through the reverse proxy against the
same clients connected to the service directly, and the time of a redeploy of a new git ref.

Brings up the chat role's scratch lab with a reverse proxy (tests/chat/chatlab.py: PostgreSQL,
RabbitMQ, the chat guest built from a git repository served by the gateway, nginx with a pebble
certificate for chat.your-domain.com) and prints, for each path (proxy: wss://chat.<domain> through
nginx, the certificate verified; direct: ws://<chat guest>:8080 from the lab host, an admin source):

- latency: one message at a time from Ann to Bob in one room, p50 and p99 of the time from Ann's
  send to Bob's receive (the message is stored in PostgreSQL and fanned out through RabbitMQ);
- throughput: Ann sends a burst of messages, messages per second received by Bob;

then their ratio (proxy / direct), and the time of a redeploy: v1 -> v2 (fetch, build, switch,
restart, health check), v2 again (no-op), back to v1 (a kept release, no rebuild). Figures are
measured in this one run on this machine; everything is torn down at the end.

    sudo SITECTL_SCRATCH_SLOT=<n> .venv/bin/python benchmarks/chat.py [--messages 300] [--burst 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chat import wsclient  # noqa: E402


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


def timed(state, ref: str) -> tuple[float, str]:
    applied = state.apply(ref)
    if applied.failed:
        raise SystemExit(f"the redeploy of {ref} failed: {applied.failed}")
    return applied.seconds, applied.states["chat-release-deployed"]["comment"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages of the latency run")
    parser.add_argument("--burst", type=int, default=1000, help="messages of the throughput run")
    args = parser.parse_args()
    from sitectl.lab import host
    from sitectl.lab.pebble import Pebble
    from tests import scratchlab
    from tests.chat import chatlab

    host.ensure_host_packages([*host.HOST_PACKAGES, "pebble", "openssl", "curl"])
    template = host.build_template()
    scratch = (scratchlab.LAB_DIR, scratchlab.BRIDGE, scratchlab.TABLE)
    host.teardown(*scratch)
    net = host.network_up(scratchlab.BRIDGE, f"{scratchlab.GATEWAY}/{scratchlab.SUBNET.prefixlen}",
                          table=scratchlab.TABLE)
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    lab = scratchlab.ScratchLab(template=template, nameserver=net["dns_ips"][0], workdir=workdir)
    proxy_ip = scratchlab.address(100).split("/")[0]  # chatlab.site's reverse proxy
    pebble = Pebble(workdir / "acme", scratchlab.GATEWAY, answer=proxy_ip).start()
    state = None
    try:
        t0 = time.monotonic()
        state = chatlab.start(lab, workdir, pebble)
        print(f"lab up in {time.monotonic() - t0:.0f} s (data tier and proxy {state.data_tier_seconds} s, "
              f"chat first apply {state.first.seconds} s, second {state.second.seconds} s)")
        paths = {"direct": (f"ws://{chatlab.CHAT_IP}:8080", None, None),
                 "proxy": (f"wss://{chatlab.FQDN}", {chatlab.FQDN: proxy_ip}, str(pebble.root))}
        results = {}
        for rnd in ("warm-up", "measured"):  # each path twice, alternating; the second round counts
            for path, (base, pins, cafile) in paths.items():
                results[path] = asyncio.run(measure(base, f"bench-{path}-{rnd}", args.messages, args.burst,
                                                    pins, cafile))
        print(f"{'path':8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'msg/s':>8}")
        for path, r in results.items():
            print(f"{path:8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['mean_ms']:8.2f} {r['msgs_per_s']:8.0f}")
        d, p = results["direct"], results["proxy"]
        print(f"{'ratio':8} {p['p50_ms'] / d['p50_ms']:8.2f} {p['p99_ms'] / d['p99_ms']:8.2f} "
              f"{p['mean_ms'] / d['mean_ms']:8.2f} {p['msgs_per_s'] / d['msgs_per_s']:8.2f}  (proxy / direct)")
        for label, ref in (("redeploy of a new ref (v1 -> v2)", "v2"), ("the same ref again (no-op)", "v2"),
                           ("back to v1 (a kept release)", "v1")):
            seconds, comment = timed(state, ref)
            print(f"{label}: {seconds:.1f} s — {comment}")
    finally:
        if state is not None:
            state.git.stop()
        pebble.stop()
        lab.stop()
        host.teardown(*scratch)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
