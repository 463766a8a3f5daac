"""The deploy job of the owner's CI (``.gitlab-ci.yml``), run on the control node as root.

``sitectl deploy --commit SHA`` is what the control node's shell runner runs (through the one sudo
rule the ``gitlab_runner`` role gives its user, ``/usr/local/sbin/platform-deploy``):

1. **the checkout moves to the pushed commit**: ``git fetch`` of ``main`` from the owner's
   repository (the deploy key the ``salt_master`` role put there), the commit must be on
   ``origin/main``; a checkout with local edits is refused; an older pipeline never moves the
   checkout back (a newer commit is already there: nothing is done);
2. when code the master itself runs changed (the ext_pillar, runners, cloud drivers, reactors,
   ``sitectl``, ``etc/``), the master is restarted and must answer again;
3. a ``test=True`` highstate of every guest of the site that has an accepted key, kept as the
   artifact ``highstate-test.json``; a state failing there stops the deploy before anything changes;
4. the highstate, kept as ``highstate.json``; then the per-guest table the lab prints.

The exit status is non-zero when any state failed, when a guest with an accepted key did not
return, or when the checkout could not be moved. Guests of the site without an accepted key are
listed as not created yet (the manual ``provision`` job creates them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sitectl.labctl import RunResult, print_table

SHA = re.compile(r"^[0-9a-f]{40}$")
# Code the running master holds in memory: a change to it needs a master restart.
MASTER_SIDE = ("_pillar/", "_runners/", "_clouds/", "reactor/", "sitectl/", "etc/", "pillar/platform/")
BRANCH = "main"


class DeployError(RuntimeError):
    """The checkout could not be moved or the master could not be reached."""


@dataclass
class Deploy:
    checkout: Path
    config_dir: Path  # the checkout's rendered config (master, minion): `sitectl master-config`
    master_config: Path | None = None  # the master's own config file (default: config_dir/master)
    remote: str = "origin"
    restart_master: list[str] = field(default_factory=lambda: ["systemctl", "restart", "salt-master"])
    # Salt's timeout: how long to wait before asking a silent minion whether it still runs the job
    # (saltutil.find_job); a minion that is gone is given up then, one that is busy is waited for.
    timeout: int = 60
    out: object = sys.stdout

    # -- git ------------------------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(self.checkout), *args], capture_output=True, text=True,
                              check=check, timeout=300)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return self.git("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0

    def move_to(self, commit: str) -> tuple[str, list[str]]:
        """Move the checkout to ``commit``; return what happened and the paths that changed."""
        if not SHA.match(commit):
            raise DeployError(f"--commit {commit!r}: expected a full 40-character commit id")
        fetched = self.git("fetch", "--quiet", self.remote, f"+refs/heads/{BRANCH}:refs/remotes/{self.remote}/{BRANCH}",
                           check=False)
        if fetched.returncode != 0:
            raise DeployError(f"git fetch from {self.remote} failed: {fetched.stderr.strip()[-500:]}")
        known = self.git("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0
        if not known or not self._is_ancestor(commit, f"{self.remote}/{BRANCH}"):
            raise DeployError(f"commit {commit} is not on {self.remote}/{BRANCH}: only the protected branch deploys")
        current = self.git("rev-parse", "HEAD").stdout.strip()
        if current == commit:
            return "already there", []
        if self._is_ancestor(commit, current):
            return "stale", []
        dirty = self.git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise DeployError("the checkout has local changes; refusing to move it (commit them to the "
                              f"repository instead):\n{dirty[:2000]}")
        changed = self.git("diff", "--name-only", current, commit).stdout.split()
        self.git("checkout", "--quiet", "-B", BRANCH, commit)
        return f"moved {current[:12]} -> {commit[:12]}", changed

    # -- salt -----------------------------------------------------------------------------------------
    def master_opts(self) -> dict:
        import salt.config

        return salt.config.master_config(str(self.master_config or self.config_dir / "master"))

    def site_pillar(self) -> dict:
        from sitectl import render

        data = render.pillar(self.config_dir, "sitectl-deploy")
        if data.get("_errors"):
            raise DeployError("the site is invalid:\n" + "\n".join(data["_errors"]))
        return data

    def accepted(self, opts: dict, names: list[str]) -> list[str]:
        keys = Path(opts["pki_dir"]) / "minions"
        return [n for n in names if (keys / n).is_file()]

    def wait_for_master(self, opts: dict, names: list[str], timeout: float = 120) -> None:
        import salt.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answered = salt.client.LocalClient(mopts=opts).cmd(names, "test.ping", tgt_type="list", timeout=10)
            except Exception:  # noqa: BLE001 - the master is still starting
                answered = {}
            if answered:
                return
            time.sleep(2)
        raise DeployError(f"no guest answered through the master within {timeout}s after its restart")

    def highstate(self, opts: dict, names: list[str], test: bool) -> tuple[dict, dict[str, RunResult]]:
        import salt.client

        client = salt.client.LocalClient(mopts=opts)
        started = time.monotonic()
        raw: dict = {}
        results: dict[str, RunResult] = {}
        kwarg = {"test": True} if test else {}
        for reply in client.cmd_iter(names, "state.highstate", tgt_type="list", kwarg=kwarg, timeout=self.timeout):
            for minion, data in reply.items():
                raw[minion] = data.get("ret")
                results[minion] = RunResult.from_return(data.get("ret"), time.monotonic() - started)
        for name in names:
            results.setdefault(name, RunResult(failed=1, errors=["no return from the minion"]))
        return raw, results


def write_artifact(directory: Path | None, name: str, text: str) -> None:
    """Write ``name`` into ``directory`` (the job's build folder) without following a link there; run
    under sudo, the file goes to the user who called it."""
    if directory is None:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
            if uid and gid and os.geteuid() == 0:
                os.fchown(fh.fileno(), int(uid), int(gid))
    finally:
        os.close(dir_fd)


class _Table:
    """What print_table reads from the lab: the guests and the pillar."""

    def __init__(self, pillar: dict):
        self.pillar = pillar
        self.guests = sorted(pillar["site"]["guests"])


def run(deploy: Deploy, commit: str, artifacts: Path | None = None) -> int:
    out = deploy.out
    try:
        moved, changed = deploy.move_to(commit)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    print(f"checkout: {moved}", file=out)
    if moved == "stale":
        print(f"deploy: the checkout is already at a newer commit of {BRANCH}; {commit[:12]} is not deployed again",
              file=out)
        return 0
    try:
        pillar = deploy.site_pillar()
        opts = deploy.master_opts()
        names = deploy.accepted(opts, sorted(pillar["site"]["guests"]))
        if any(path.startswith(MASTER_SIDE) for path in changed):
            if deploy.restart_master:
                print("the master's own code changed: restarting it", file=out)
                subprocess.run(deploy.restart_master, check=True, timeout=300)
                deploy.wait_for_master(opts, names)
            else:
                print("the master's own code changed; no restart command was given", file=out)
    except (DeployError, subprocess.SubprocessError) as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    missing = sorted(set(pillar["site"]["guests"]) - set(names))
    if missing:
        print(f"not created yet (the manual provision job creates them): {', '.join(missing)}", file=out)
    if not names:
        print("deploy: no guest of the site has an accepted key", file=sys.stderr)
        return 1
    table = _Table(pillar)
    raw, tested = deploy.highstate(opts, names, test=True)
    write_artifact(artifacts, "highstate-test.json", json.dumps(raw, indent=2, sort_keys=True, default=str))
    if any(r.failed for r in tested.values()):
        print_table(table, tested, {}, out=out, columns=("test=True", "highstate"))
        _print_failures(tested)
        print("deploy: the test=True highstate failed; nothing was applied", file=sys.stderr)
        return 1
    raw, applied = deploy.highstate(opts, names, test=False)
    write_artifact(artifacts, "highstate.json", json.dumps(raw, indent=2, sort_keys=True, default=str))
    print_table(table, tested, applied, out=out, columns=("test=True", "highstate"))
    failed = _print_failures(applied)
    return 1 if failed else 0


def _print_failures(results: dict[str, RunResult]) -> bool:
    failed = {n: r.errors for n, r in results.items() if r.failed}
    for name, errors in sorted(failed.items()):
        print(f"FAILED {name}: " + "; ".join(errors[:5]), file=sys.stderr)
    return bool(failed)


def provision(deploy: Deploy, commit: str, salt_cloud: Path | None = None) -> int:
    """The manual job: the checkout to ``commit``, then ``salt-cloud -m`` of the site's guests that
    have no accepted key yet (salt-cloud's created event brings each to its first highstate through
    the reactor). Existing guests are never touched."""
    from sitectl import site

    try:
        moved, changed = deploy.move_to(commit)
        print(f"checkout: {moved}", file=deploy.out)
        pillar = deploy.site_pillar()
        opts = deploy.master_opts()
    except DeployError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    if any(path.startswith(MASTER_SIDE) for path in changed):
        print("provision: the master's own code changed with this commit: run the deploy job first", file=sys.stderr)
        return 2
    existing = set(deploy.accepted(opts, sorted(pillar["site"]["guests"])))
    wanted = {profile: [n for n in names if n not in existing] for profile, names in site.cloud_map(pillar).items()}
    wanted = {profile: names for profile, names in wanted.items() if names}
    if not wanted:
        print("every guest of the site exists; nothing to create", file=deploy.out)
        return 0
    mapfile = deploy.config_dir / "provision.map"
    fd = os.open(mapfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(wanted, fh, indent=2, sort_keys=True)
    print("creating: " + ", ".join(f"{n} ({p})" for p, names in sorted(wanted.items()) for n in names), file=deploy.out)
    command = salt_cloud or Path(sys.executable).parent / "salt-cloud"
    done = subprocess.run([str(command), "-c", str(deploy.config_dir), "-m", str(mapfile), "-P", "-y", "--no-color"],
                          check=False, timeout=4 * 3600)
    return done.returncode
