"""Time to create the example site's whole map with the Proxmox driver against fakepve: sequential vs -P.

    .venv/bin/python benchmarks/proxmox.py [--latency 0.02]

Runs the real `salt-cloud -m` (provider proxmox, bootstrap none) against a fake PVE served over HTTPS on
loopback, twice (sequential, then -P), each time on a fresh fake, and prints the wall time, and the API
calls the driver made per guest (counted by the fake, grouped by method and path kind). --latency
adds that many seconds to every API answer (fakepve's slow_network), closer to a real PVE over a LAN.
It measures the driver and salt-cloud, not PVE: fakepve finishes every task at once.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakepve import FakePve  # noqa: E402
from fakepve.certs import make_cert  # noqa: E402

from tests.proxmox.conftest import TEMPLATE_VMID, GuestAgents, _populate, _Served, make_cloud  # noqa: E402


def _kind(path: str) -> str:
    path = path.split("/api2/json", 1)[-1]
    path = re.sub(r"/tasks/UPID:[^/]+", "/tasks/{upid}", path)
    return re.sub(r"/\d+(?=/|$)", "/{vmid}", path)


def run(parallel: bool, latency: float, pki: tuple[str, str]) -> dict:
    pve = FakePve(host="127.0.0.1", port=0)
    _populate(pve)
    if latency:
        pve.time_scale = 1.0
        pve.slow_network(latency)
    served = _Served(pve, *pki)
    agents = GuestAgents(pve)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pve-") as tmp:
            cloud = make_cloud(Path(tmp), pve, pki[0])
            mapfile = cloud.map_file()
            args = ["-m", str(mapfile)] + (["-P"] if parallel else [])
            before = len(pve.requests)
            started = time.monotonic()
            result = cloud.run(*args, timeout=900)
            seconds = time.monotonic() - started
            if result.returncode != 0 or '"Error"' in result.stdout:
                raise SystemExit(f"salt-cloud {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
            made = [g for g in {**{v.vmid: v for v in pve.vms}, **{c.vmid: c for c in pve.cts}} if g != TEMPLATE_VMID]
            requests = pve.requests[before:]
    finally:
        agents.stop()
        served.stop()
    return {"seconds": seconds, "guests": len(made), "requests": requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pki-") as pki_dir:
        cert, key, _ = make_cert(pki_dir, hosts=("127.0.0.1",))
        seq = run(False, args.latency, (cert, key))
        par = run(True, args.latency, (cert, key))
    n = seq["guests"]
    print(f"example map: {n} guests (10 LXC, 1 QEMU), fakepve 0.5.0 on loopback, latency {args.latency:g} s per call")
    print(f"  sequential salt-cloud -m     {seq['seconds']:6.1f} s")
    print(f"  parallel   salt-cloud -m -P  {par['seconds']:6.1f} s  ({seq['seconds'] / par['seconds']:.1f}x)")
    print(f"  API calls: {len(par['requests'])} for the map ({len(par['requests']) / n:.1f} per guest)")
    counts = collections.Counter(f"{m} {_kind(p)}" for m, p, _ in par["requests"])
    for what, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {count:4d}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
