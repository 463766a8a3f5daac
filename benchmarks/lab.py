"""Benchmark of the lab: how long the example site takes to come up here, against the plain apt floor.

Prints: template build time, guest creation time (salt-cloud -m of the whole map), the Vault
bootstrap phases, the first and the no-op highstate per guest and for the whole lab, peak memory,
each guest's no-op split (round trip, pillar, Vault token, compiler, states: benchmarks/noop.py)
with the whole site up,
then each guest of ALONE by itself (destroyed and created again with salt-cloud -p: first
highstate, no-op median of 3) next to its floor: a plain `apt-get install` of the same packages
(the base state's and the ones its role's states install) on a fresh guest of the same template.
The comparison is a ratio of times measured in this one run (the machine is noisy; absolute
seconds are not comparable across runs).

    sudo .venv/bin/python benchmarks/lab.py [--rebuild-template]

It replaces any lab running on this machine and tears everything down at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sitectl import labctl, site  # noqa: E402
from sitectl.lab import aptsources, host  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import noop  # noqa: E402

# The goals of issue 21, next to each figure of the summary.
GOAL_FIRST_TO_FLOOR = 1.3
GOAL_LAB_UP_S = 600

# The data tier (issue 6). Not the vault guest: its Vault holds the site's secrets and the lab's
# bootstrap ciphertext; destroying it would orphan both.
ALONE = ("postgresql", "rabbitmq")
FLOOR_GUEST, FLOOR_ADDRESS = "bench-floor", "10.77.0.250/24"


def used_memory_mib() -> float:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":")
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class MemoryPeak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.baseline = used_memory_mib()
        self.peak = self.baseline
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, used_memory_mib())


def common_packages() -> list[str]:
    """The packages the base state installs (the floor installs exactly these, also without recommends)."""
    import re

    import yaml

    defaults = yaml.safe_load((ROOT / "salt/common/defaults.yaml").read_text())["common"]["packages"]
    base = re.search(r"set base_packages = \[(.*?)\]", (ROOT / "salt/common/map.jinja").read_text(), re.S)
    return sorted({*defaults, *re.findall(r"'([a-z0-9.+-]+)'", base.group(1))})


def role_packages(lab: labctl.Lab, name: str) -> list[str]:
    """The packages the guest's own role states install (pkg.installed in its rendered highstate)."""
    from sitectl import render

    high = render.highstate(lab.conf, name)
    out: set[str] = set()
    for state_id, state in high.items():
        if state["__sls__"].startswith("common.") or "pkg" not in state:
            continue
        args = {k: v for item in state["pkg"] if isinstance(item, dict) for k, v in item.items()}
        if "installed" in state["pkg"]:
            out.update(args.get("pkgs") or [args.get("name", state_id)])
    return sorted(out)


def floor_seconds(lab: labctl.Lab, packages: list[str]) -> float:
    net = lab.pillar["site"]["network"]
    template = host.build_template()
    host.create_guest(FLOOR_GUEST, FLOOR_ADDRESS, net["gateway"], aptsources.host_nameservers()[0],
                      lab_dir=lab.lab_dir, template=template, bridge=lab.bridge)
    try:
        host.start_guest(FLOOR_GUEST, lab_dir=lab.lab_dir)
        t0 = time.monotonic()
        install = "apt-get install -y -qq --no-install-recommends " + " ".join(packages)
        host.attach(FLOOR_GUEST, ["sh", "-c", f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive {install}"],
                    lab_dir=lab.lab_dir, timeout=1800)
        return time.monotonic() - t0
    finally:
        host.destroy_guest(FLOOR_GUEST, lab_dir=lab.lab_dir)


def one_guest_alone(lab: labctl.Lab, name: str) -> tuple[labctl.RunResult, float]:
    """(first highstate after salt-cloud -p, median no-op of 3) for one guest with the others idle."""
    salt_cloud = str(Path(sys.executable).parent / "salt-cloud")
    subprocess.run([salt_cloud, "-c", str(lab.conf), "-y", "-d", name], check=True, capture_output=True)
    collector = labctl.HighstateCollector(lab.master_opts(), [name])
    collector.start()
    profile = site.guest_view(lab.pillar, name)["profile"]
    subprocess.run([salt_cloud, "-c", str(lab.conf), "-y", "-p", profile, name], check=True, capture_output=True)
    collector.done.wait(timeout=1800)
    collector.stop.set()
    first = collector.results[name]
    if first.failed:
        raise SystemExit(f"{name}: first highstate failed: {first.errors}")
    lab.wait_for_minions([name])
    noops = [lab.highstate([name])[name].seconds for _ in range(3)]
    return first, statistics.median(noops)


def main() -> int:
    # the arguments first: `--help` must not reach the teardown below (it takes every lab guest down)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-template", action="store_true",
                        help="build the template again into an empty cache (cold build)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sitectl-bench-"))
    try:
        return run(state, args)
    finally:
        labctl.down(state_dir=state)


def run(state: Path, args: argparse.Namespace) -> int:
    figures: dict[str, object] = {}

    labctl.down(state_dir=state)
    if args.rebuild_template:
        cache = tempfile.mkdtemp(prefix="sitectl-bench-cache-")
        t0 = time.monotonic()
        host.build_template(cache_dir=cache)
        figures["template_build_cold_s"] = round(time.monotonic() - t0, 1)
        subprocess.run(["rm", "-rf", cache], check=True)
    recipe = json.loads((Path(host.template_path()).parent / "recipe.json").read_text())
    figures["template_build_recorded_s"] = recipe.get("seconds", {})

    memory = MemoryPeak()
    memory.start()
    t0 = time.monotonic()
    rc = labctl.up(state_dir=state)
    figures["whole_lab_up_s"] = round(time.monotonic() - t0, 1)
    memory.stop.set()
    report = json.loads((state / labctl.REPORT).read_text())
    figures["whole_lab"] = report["timings"]
    figures["peak_memory_mib"] = {"baseline": round(memory.baseline), "peak": round(memory.peak),
                                  "lab": round(memory.peak - memory.baseline)}
    if rc != 0:
        print(json.dumps(figures, indent=2))
        raise SystemExit("the lab did not converge cleanly; no figures for one guest")

    lab = labctl.Lab(state_dir=state)
    lab.configure()
    split = noop.measure_lab(state, runs=3)  # the whole site up, before any guest is taken away
    figures["noop_split"] = split
    for name in ALONE:
        packages = sorted({*common_packages(), *role_packages(lab, name)})
        first_alone, noop_alone = one_guest_alone(lab, name)
        floor = floor_seconds(lab, packages)
        figures[f"{name}_alone"] = {
            "created_event_to_first_highstate_return_s": first_alone.seconds,
            "first_highstate_job_s": first_alone.job_seconds,
            "noop_highstate_median_s": round(noop_alone, 1),
            "floor_apt_get_install_s": round(floor, 1),
            "floor_packages": len(packages),
            "ratio_first_highstate_job_to_floor": round(first_alone.job_seconds / floor, 2),
            "ratio_created_to_converged_to_floor": round(first_alone.seconds / floor, 2),
        }

    print("\n== lab benchmark (one run; compare the ratio, not absolute seconds)")
    print(f"{'guest':<22} {'first (all at once)':>20} {'no-op (all at once)':>20}")
    for name in sorted(report["first"]):
        first, second = report["first"][name]["seconds"], report["second"][name]["seconds"]
        print(f"{name:<22} {first:>19.1f}s {second:>19.1f}s")
    noop.report(split, 3)
    summary(figures, split)
    print(json.dumps(figures, indent=2, default=str))
    return 0


def summary(figures: dict, split: dict) -> None:
    """Issue 21's table: each figure of this run next to its goal, as a ratio (1.0 = the goal)."""
    rows = []
    for name, fig in split["guests"].items():
        goal = noop.goal_for(fig["roles"])
        rows.append((f"no-op, one guest: {name} ({','.join(fig['roles'])})", f"{fig['total']:.1f} s", f"<= {goal} s",
                     fig["total"] / goal))
    whole = split["whole_lab"]["median"]
    rows.append((f"no-op, whole lab ({split['whole_lab']['guests']} guests at once)", f"{whole:.1f} s",
                 f"<= {noop.GOAL_WHOLE_LAB_S:.0f} s", whole / noop.GOAL_WHOLE_LAB_S))
    for name in ALONE:
        ratio = figures[f"{name}_alone"]["ratio_first_highstate_job_to_floor"]
        rows.append((f"first highstate job / apt floor: {name}", f"{ratio:.2f}", f"<= {GOAL_FIRST_TO_FLOOR}",
                     ratio / GOAL_FIRST_TO_FLOOR))
    up = figures["whole_lab_up_s"]
    rows.append(("lab up (template cached)", f"{up:.0f} s", f"<= {GOAL_LAB_UP_S} s", up / GOAL_LAB_UP_S))
    print(f"\n{'figure (this run)':<58} {'measured':>10} {'goal':>10} {'x goal':>7}")
    for what, measured, goal, ratio in rows:
        print(f"{what:<58} {measured:>10} {goal:>10} {ratio:>7.2f}{'' if ratio <= 1 else '  over'}")


if __name__ == "__main__":
    sys.exit(main())
