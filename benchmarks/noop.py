"""Benchmark of the no-op highstate: where each guest's time goes, next to the goals of issue 21.

Per guest, for a highstate that changes nothing (the guest converged by this same run first):

- total        the no-op highstate, from the publication of the job to its return (median of RUNS)
- round trip   publish/return of ``test.ping`` (Salt's floor for any job)
- pillar       ``pillar.items`` minus the round trip: the minion asks the master, the master
               compiles it (the platform ext_pillar validates the whole site), and sends it back;
               ``ext_pillar`` is that compile alone, timed in this process (cold: first call of a
               process; warm: the same bytes again, as the master's workers see it)
- vault token  ``vault.clear_cache`` + ``vault.get_server_config`` minus the round trip: a new
               token issued by the master (peer run, with its own pillar compile). A highstate pays
               it only when the token its minion keeps on disk ends (at most hourly) or no longer
               fits (etc/master.j2 ``vault:cache``): not part of the total below otherwise
- compiler     ``state.show_lowstate`` minus ``pillar.items``: rendering and compiling the SLS
- states       the sum of Salt's per-state ``duration``, and the slowest states
- other        total minus round trip, pillar, compiler and states (the minion's own work around them)

then the whole lab's no-op (every guest at once, one job) against its goal, with the CPU seconds
each guest (its LXC cgroup) and the master's processes used in the median run, next to what the
host's cores give in that time: on two cores the whole lab is CPU-bound, so its wall time follows
the sum, and the sum says what a change saved.

    .venv/bin/python benchmarks/noop.py                 # the running whole-site lab of this checkout
                                                        # (run it under flock /tmp/sitectl-lab.lock)
    .venv/bin/python benchmarks/noop.py --scratch rabbitmq postgresql
                                                        # each role alone in a scratch lab (slot
                                                        # SITECTL_SCRATCH_SLOT), masterless: no round
                                                        # trip and no master pillar; the states and
                                                        # the compiler as the role has them

A ratio between figures of one run is what compares across machines; absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_GUEST_S = 2.5  # a no-op highstate of one guest with its full roles (issue 21)
GOAL_BASE_ONLY_S = 1.0  # a guest with the base state only
GOAL_WHOLE_LAB_S = 10.0  # every guest at once
TOP = 5


def state_split(ret: dict) -> tuple[float, list[tuple[float, str]], int, int]:
    """(seconds in states, slowest (seconds, state id) first, states, states with changes)."""
    durations = []
    changed = 0
    for key, state in ret.items():
        if not isinstance(state, dict):
            continue
        durations.append((float(state.get("duration") or 0) / 1000, state.get("__id__") or key.split("_|-")[1]))
        changed += bool(state.get("changes")) or state.get("result") is not True
    durations.sort(reverse=True)
    return sum(d for d, _ in durations), durations[:TOP], len(durations), changed


def ext_pillar_seconds(pillar_dir: Path, site: str, minion_id: str) -> tuple[float, float]:
    """(cold, warm) seconds of the platform ext_pillar for ``minion_id``, in this process."""
    import importlib.util

    from sitectl import pillarcache

    spec = importlib.util.spec_from_file_location("platform_ext_pillar", ROOT / "_pillar" / "platform.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"platform_pillar_dir": str(pillar_dir), "platform_site": site}
    pillarcache.clear()
    t0 = time.perf_counter()
    module.ext_pillar(minion_id, {})
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    module.ext_pillar(minion_id, {})
    return cold, time.perf_counter() - t0


def goal_for(roles: list[str]) -> float:
    return GOAL_BASE_ONLY_S if not [r for r in roles if r != "base"] else GOAL_GUEST_S


def print_row(name: str, roles: list[str], fig: dict) -> None:
    goal = goal_for(roles)
    total = fig["total"]
    verdict = "meets" if total <= goal else f"{total / goal:.1f}x the goal"
    cells = [f"{fig.get(k):>6.2f}" if isinstance(fig.get(k), float) else f"{'-':>6}"
             for k in ("round_trip", "pillar", "vault_token", "compiler", "states", "other")]
    print(f"{name:<16} {total:>6.2f} {goal:>5.1f} {verdict:<16} " + " ".join(cells))
    for seconds, state_id in fig["slowest"]:
        print(f"{'':<16}   {seconds:>6.2f}s  {state_id}")


def header() -> None:
    print(f"{'guest':<16} {'total':>6} {'goal':>5} {'':<16} " + " ".join(
        f"{c:>6}" for c in ("trip", "pillar", "token", "comp", "states", "other")))


# ---------------------------------------------------------------------------------- the whole lab

def guest_cpu_seconds() -> dict[str, float]:
    """CPU seconds each running LXC guest has used so far (its cgroup; v1 or v2)."""
    import glob

    out: dict[str, float] = {}
    for path in glob.glob("/sys/fs/cgroup/cpuacct/lxc.payload.*/cpuacct.usage"):
        out[path.split("lxc.payload.")[1].split("/")[0]] = int(Path(path).read_text()) / 1e9
    for path in glob.glob("/sys/fs/cgroup/lxc.payload.*/cpu.stat"):
        usage = next(line for line in Path(path).read_text().splitlines() if line.startswith("usage_usec"))
        out[path.split("lxc.payload.")[1].split("/")[0]] = int(usage.split()[1]) / 1e6
    return out


def master_cpu_seconds(config_dir: Path) -> float:
    """CPU seconds the processes of the master configured in ``config_dir`` have used so far."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            # The master's processes set their title: the command line is one string, not argv.
            raw = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"salt-master" not in raw or f" {config_dir} ".encode() not in raw + b" ":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_split(before: tuple[dict, float], after: tuple[dict, float], names: list[str]) -> dict:
    guests = {n: round(after[0].get(n, 0.0) - before[0].get(n, 0.0), 2) for n in names}
    return {"guests": guests, "guests_total": round(sum(guests.values()), 1),
            "master": round(after[1] - before[1], 1)}


def median_run(runs: list[tuple[float, object]]) -> tuple[float, object]:
    """The (seconds, return) of the median run (the lower middle one of an even count): the states'
    durations shown are those of the run whose time is shown."""
    if not runs:
        return float("nan"), None
    return sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]


def timed(client, names: list[str], fun, arg=(), runs: int = 3, timeout: int = 300) -> tuple[dict, dict]:
    """name -> median seconds from publication to each minion's return; name -> that run's return."""
    seen: dict[str, list[tuple[float, object]]] = {n: [] for n in names}
    for _ in range(runs):
        t0 = time.monotonic()
        for reply in client.cmd_iter(names, fun, arg=list(arg), tgt_type="list", timeout=timeout):
            for minion, data in reply.items():
                if minion in seen:
                    seen[minion].append((time.monotonic() - t0, data.get("ret")))
    medians = {n: median_run(r) for n, r in seen.items()}
    return {n: m[0] for n, m in medians.items()}, {n: m[1] for n, m in medians.items()}


def measure_lab(state_dir: Path, runs: int) -> dict:
    import salt.client

    from sitectl import labctl

    lab = labctl.Lab(state_dir=state_dir)
    lab.configure()
    if not lab.master_pid():
        raise SystemExit(f"no lab master runs for {state_dir}: `sitectl lab up` first (under flock)")
    guests = [n for n in lab.guests if n in {g["name"] for g in lab.host.list_guests(lab.lab_dir)}]
    missing = lab.wait_for_minions(guests, timeout=60)
    guests = [n for n in guests if n not in missing]
    client = salt.client.LocalClient(mopts=lab.master_opts())
    out: dict = {"guests": {}, "missing": missing}
    # One warm-up highstate: the no-op figures are of a guest converged by this run, not by another.
    warm, _ = timed(client, guests, "state.highstate", runs=1, timeout=1800)
    for name in guests:
        roles = lab.pillar["site"]["guests"][name]["roles"]
        # one guest at a time, the others idle (the whole-lab figure below is all at once)
        trip, _ = timed(client, [name], "test.ping", runs=runs)
        pillar, _ = timed(client, [name], "pillar.items", runs=runs)
        lowstate, _ = timed(client, [name], "state.show_lowstate", runs=runs)
        token, _ = timed(client, [name], ["vault.clear_cache", "vault.get_server_config"], arg=([], []), runs=runs)
        total, rets = timed(client, [name], "state.highstate", runs=runs, timeout=1800)
        ret = rets.get(name) if isinstance(rets.get(name), dict) else {}
        states, slowest, count, changed = state_split(ret)
        cold, warm_pillar = ext_pillar_seconds(ROOT / "pillar", lab.settings.site, name)
        fig = {
            "roles": roles, "total": total[name], "round_trip": trip[name],
            "pillar": max(pillar[name] - trip[name], 0.0), "vault_token": max(token[name] - trip[name], 0.0),
            "compiler": max(lowstate[name] - pillar[name], 0.0), "states": states,
            "other": None, "slowest": slowest, "state_count": count, "not_clean": changed,
            "ext_pillar_cold": cold, "ext_pillar_warm": warm_pillar, "warm_up": warm.get(name),
        }
        fig["other"] = max(fig["total"] - fig["round_trip"] - fig["pillar"] - fig["compiler"] - fig["states"], 0.0)
        out["guests"][name] = fig
        print(f"measured {name}: total {fig['total']:.2f}s, trip {fig['round_trip']:.2f}, pillar {fig['pillar']:.2f}, "
              f"token {fig['vault_token']:.2f}, compiler {fig['compiler']:.2f}, states {fig['states']:.2f}; slowest "
              + ", ".join(f"{state_id} {seconds:.2f}s" for seconds, state_id in slowest[:3]), flush=True)
    import os

    whole, rets, cpus = [], {}, []
    for _ in range(runs):
        before = (guest_cpu_seconds(), master_cpu_seconds(lab.conf))
        t0 = time.monotonic()
        per, rets = timed(client, guests, "state.highstate", runs=1, timeout=1800)
        whole.append(time.monotonic() - t0)
        cpus.append(cpu_split(before, (guest_cpu_seconds(), master_cpu_seconds(lab.conf)), guests))
    median_index = sorted(range(len(whole)), key=lambda i: whole[i])[(len(whole) - 1) // 2]
    out["whole_lab"] = {"median": statistics.median(whole), "runs": whole, "guests": len(guests),
                        "cpu": {**cpus[median_index], "cores": os.cpu_count(),
                                "wall": round(whole[median_index], 1)},
                        "not_clean": {n: state_split(r)[3] for n, r in rets.items() if isinstance(r, dict)
                                      and state_split(r)[3]}}
    return out


# ---------------------------------------------------------------------------------- one role alone

def measure_scratch(roles: list[str], runs: int) -> dict:
    """Each role on its example-site guest in a scratch lab, masterless (salt-call --local)."""
    from sitectl.lab import host
    from tests import scratchlab

    scratch = (scratchlab.LAB_DIR, scratchlab.BRIDGE, scratchlab.TABLE)
    host.ensure_host_packages()
    template = host.build_template()
    host.teardown(*scratch)
    net = host.network_up(scratchlab.BRIDGE, f"{scratchlab.GATEWAY}/{scratchlab.SUBNET.prefixlen}",
                          table=scratchlab.TABLE)
    lab = scratchlab.ScratchLab(template=template, nameserver=net["dns_ips"][0],
                                workdir=Path(tempfile.mkdtemp(prefix="sitectl-bench-noop-")))
    site = scratchlab.example_site()
    out: dict = {"guests": {}}
    try:
        bao = lab.start_vault()
        guests = {role: next(n for n, g in sorted(site["guests"].items()) if role in g["roles"]) for role in roles}
        for role, name in guests.items():
            lab.start_guests(site, name)
            lab.push_salt(name, scratchlab.guest_pillar(site, name), vault_token=bao.root_token)
            first = lab.apply(name, role)
            if first.failed:
                raise SystemExit(f"{role}: the first apply failed: {first.failed}")
            noops = []
            for _ in range(runs):
                t0 = time.monotonic()
                returns, _cp = lab._salt_call(name, "state.apply", role)
                noops.append((time.monotonic() - t0, returns))
            total, last = median_run(noops)
            cli = []
            for _ in range(runs):
                t0 = time.monotonic()
                lab.salt(name, "test.true")
                cli.append(time.monotonic() - t0)
            compiled = []
            for _ in range(runs):
                t0 = time.monotonic()
                lab.salt(name, "state.show_low_sls", role)
                compiled.append(time.monotonic() - t0)
            states, slowest, count, changed = state_split(last)
            start = statistics.median(cli)
            compiler = max(statistics.median(compiled) - start, 0.0)
            cold, warm = ext_pillar_seconds(ROOT / "pillar", "example", name)
            out["guests"][name] = {
                "roles": [role], "total": total, "first_apply": first.seconds, "round_trip": None,
                "pillar": None, "vault_token": None, "salt_call_start": start, "compiler": compiler,
                "states": states, "other": max(total - start - compiler - states, 0.0), "slowest": slowest,
                "state_count": count, "not_clean": changed, "ext_pillar_cold": cold, "ext_pillar_warm": warm,
            }
    finally:
        lab.stop()
        host.teardown(*scratch)
    return out


def report(figures: dict, runs: int, scratch: bool = False) -> None:
    print(f"\n== no-op highstate per guest (seconds; medians of {runs}; compare ratios, not seconds)")
    if scratch:
        print("masterless scratch lab: 'trip' is salt-call's own start (no master), no master pillar or token")
    header()
    for name, fig in figures["guests"].items():
        print_row(name, fig["roles"], fig)
        print(f"{'':<16}   ext_pillar in-process: cold {fig['ext_pillar_cold']:.3f}s, warm "
              f"{fig['ext_pillar_warm']:.3f}s; {fig['state_count']} states, {fig['not_clean']} not clean")
    if "whole_lab" in figures:
        w = figures["whole_lab"]
        ratio = w["median"] / GOAL_WHOLE_LAB_S
        print(f"\nwhole lab, {w['guests']} guests at once: {w['median']:.1f}s (goal {GOAL_WHOLE_LAB_S:.0f}s, "
              f"{ratio:.1f}x), runs {', '.join(f'{r:.1f}' for r in w['runs'])}; not clean: {w['not_clean'] or 'none'}")
        cpu = w.get("cpu")
        if cpu:
            top = sorted(cpu["guests"].items(), key=lambda kv: -kv[1])
            print(f"  CPU in the median run ({cpu['wall']:.1f}s on {cpu['cores']} cores = "
                  f"{cpu['wall'] * cpu['cores']:.0f} CPU-s): guests {cpu['guests_total']:.1f}s ("
                  + ", ".join(f"{n} {v:.1f}" for n, v in top) + f"), master {cpu['master']:.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", nargs="+", metavar="ROLE", help="each role alone in a scratch lab")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".salt", help="the lab's state dir")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()
    figures = measure_scratch(args.scratch, args.runs) if args.scratch else measure_lab(args.state_dir, args.runs)
    if args.scratch:
        for fig in figures["guests"].values():
            fig["round_trip"] = fig.pop("salt_call_start")
    report(figures, args.runs, scratch=bool(args.scratch))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
