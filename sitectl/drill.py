"""The disaster-recovery drill: lose a stateful guest for real and bring it back from the backup
repository off the guest, checking the data, with the time of each phase (docs/backup.md, "Drill").

    sitectl drill --guest postgresql     # or --guest vault, --guest rabbitmq

Phases, each timed; the recovery time is everything after the guest is gone:

1. ``preflight``: write data the check will look for (PostgreSQL: a table of rows; RabbitMQ: a durable
   queue with its binding, added to the broker's definitions), run the guest's backup job now (a fresh
   snapshot of what is there), check the repository (``platform-restore --check``: it answers, opens
   with the job's password, ``restic check`` finds it whole, a snapshot of this guest exists) and
   take fingerprints of the data. Any failure here stops the drill: nothing has been destroyed.
2. ``destroy``: ``salt-cloud -d`` the guest (its disk and minion key go).
3. ``recreate``: ``salt-cloud -m`` for that guest only; the created-event reactor highstates it.
4. ``restore``: ``platform-restore`` the job's latest snapshot on the new guest, then the role's own
   step (PostgreSQL: each database from its dump; Vault: the raft snapshot into a new server, as
   its operator, then the operators' unseal share; RabbitMQ: ``rabbitmqctl import_definitions`` of
   the exported definitions).
5. ``converge`` (Vault only): the highstate again, now that Vault is unsealed.
6. ``verify``: the same fingerprints (PostgreSQL: row count and checksum of every table of every
   database; Vault: an HMAC of every secret, and every guest reading the secrets of its roles and
   grants through the master with the same policies; RabbitMQ: vhosts, users with their tags and
   password hashes, permissions, queues, exchanges, bindings and policies), and the consumers: their
   own access works without anything done to them.

It drives the lab (``sitectl.labctl.Lab``: the lab's provider and master); on Proxmox the phases are
the same commands with the proxmox provider, run by the operator (docs/backup.md).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field

# role -> its backup job (salt/backup/job.jinja)
JOBS = {"postgresql": "postgresql", "vault": "vault", "rabbitmq": "rabbitmq"}
DRILL_DB = "chat"
DRILL_TABLE = "recovery_drill"
# Rows written before the backup: the drill finds them, identical, after the restore.
DRILL_ROWS = ("CREATE TABLE IF NOT EXISTS recovery_drill (id int PRIMARY KEY, body text, at timestamptz); "
              "INSERT INTO recovery_drill SELECT (SELECT coalesce(max(id), 0) FROM recovery_drill) + g, "
              "md5(random()::text), now() FROM generate_series(1, 1000) g")

PG_FINGERPRINTS = r"""
set -euo pipefail
for db in $(runuser -u postgres -- psql -XAt -d postgres -c "SELECT datname FROM pg_database
        WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' ORDER BY 1"); do
    for table in $(runuser -u postgres -- psql -XAt -d "$db" -c "SELECT quote_ident(schemaname) || '.' ||
            quote_ident(tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
            ORDER BY 1"); do
        echo "$db $table $(runuser -u postgres -- psql -XAt -d "$db" -c "SELECT count(*) || ' ' ||
            coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM $table t")"
    done
done
"""

# RabbitMQ: the broker's definitions as JSON on stdout (rabbitmqctl writes as the rabbitmq user, into
# a folder of its own under /run), and the drill's queue added to them before the backup.
RABBITMQ_EXPORT = r"""
set -euo pipefail
install -d -o rabbitmq -g rabbitmq -m 0700 /run/platform-drill
rabbitmqctl --quiet export_definitions /run/platform-drill/definitions.json >/dev/null
cat /run/platform-drill/definitions.json
rm -f /run/platform-drill/definitions.json
"""
RABBITMQ_QUEUE = "recovery_drill"
RABBITMQ_RESTORE = "rabbitmqctl --quiet import_definitions /var/backups/rabbitmq/definitions.json"


def rabbitmq_fingerprint(definitions: dict) -> dict:
    """What a restore must bring back, in a form that compares: every vhost, user (tags and password
    hash), permission, durable queue, exchange, binding and policy (the broker's own version fields
    left out). A client's own transient queues (server-named ``amq.gen-*``, exclusive or auto-deleted,
    gone with its connection) and their bindings are not the broker's to restore: the client declares
    them again when it reconnects, under new names."""
    transient = {(q.get("vhost"), q.get("name")) for q in definitions.get("queues") or []
                 if not q.get("durable") or q.get("auto_delete") or str(q.get("name", "")).startswith("amq.gen-")}

    def kept(key: str, item: dict) -> bool:
        if key == "queues":
            return (item.get("vhost"), item.get("name")) not in transient
        if key == "bindings" and item.get("destination_type") == "queue":
            return ((item.get("vhost"), item.get("destination")) not in transient
                    and not str(item.get("destination", "")).startswith("amq.gen-"))
        return True

    def rows(key: str, fields: tuple[str, ...]) -> list:
        return sorted(json.dumps({f: item.get(f) for f in fields}, sort_keys=True)
                      for item in definitions.get(key) or [] if kept(key, item))

    return {"vhosts": rows("vhosts", ("name",)),
            "users": rows("users", ("name", "tags", "password_hash", "hashing_algorithm")),
            "permissions": rows("permissions", ("user", "vhost", "configure", "write", "read")),
            "queues": rows("queues", ("name", "vhost", "durable", "auto_delete", "arguments")),
            "exchanges": rows("exchanges", ("name", "vhost", "type", "durable", "auto_delete", "internal",
                                            "arguments")),
            "bindings": rows("bindings", ("source", "vhost", "destination", "destination_type", "routing_key",
                                          "arguments")),
            "policies": rows("policies", ("name", "vhost", "pattern", "apply-to", "definition", "priority"))}


# A new Vault is initialised with a throwaway key only to accept the snapshot; once restored it is
# the old Vault again, sealed with the operators' keys. Nothing of it leaves the guest's /run.
VAULT_RESTORE = r"""
import json, os, ssl, subprocess, sys, time, urllib.request
addr, ca, binary, snapshot = sys.argv[1:5]
context = ssl.create_default_context(cafile=ca)

def call(method, path, body=None, token=None):
    request = urllib.request.Request(addr + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"X-Vault-Token": token} if token else {})
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        return json.loads(reply.read() or b"{}")

for _ in range(60):
    try:
        call("GET", "/v1/sys/seal-status")
        break
    except OSError:
        time.sleep(1)
init = call("POST", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
call("POST", "/v1/sys/unseal", {"key": init["keys_base64"][0]})
for _ in range(60):
    try:
        if call("GET", "/v1/sys/health").get("initialized"):
            break
    except OSError:
        pass
    time.sleep(1)
prefix = "BAO" if binary.endswith("bao") else "VAULT"
env = {"PATH": "/usr/bin:/bin", f"{prefix}_ADDR": addr, f"{prefix}_CACERT": ca, f"{prefix}_TOKEN": init["root_token"]}
subprocess.run([binary, "operator", "raft", "snapshot", "restore", "-force", snapshot], env=env, check=True)
print("restored", snapshot)
"""


@dataclass
class Drill:
    guest: str
    role: str
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def timed(self, name: str, func, *args):
        t0 = time.monotonic()
        print(f"-- {name} ...", flush=True)
        try:
            return func(*args)
        finally:
            self.phases[name] = round(time.monotonic() - t0, 1)
            print(f"   {name}: {self.phases[name]} s", flush=True)

    @property
    def recovery_seconds(self) -> float:
        return round(sum(v for k, v in self.phases.items() if k != "preflight"), 1)


class DrillFailed(RuntimeError):
    pass


class Runner:
    """The drill against the lab's master and provider."""

    def __init__(self, lab, guest: str):
        import salt.client

        self.lab = lab
        self.guest = guest
        self.client = salt.client.LocalClient(mopts=lab.master_opts())
        spec = lab.pillar["site"]["guests"].get(guest)
        if spec is None:
            raise DrillFailed(f"{guest} is not a guest of the site")
        roles = [r for r in spec["roles"] if r in JOBS]
        if not roles:
            raise DrillFailed(f"{guest} has no role the drill knows how to restore ({', '.join(sorted(JOBS))})")
        self.drill = Drill(guest, roles[0])
        self.job = JOBS[self.drill.role]

    # -- helpers -----------------------------------------------------------------------------------
    def cmd(self, target: str, fun: str, *args, timeout: int = 600, **kwargs):
        reply = self.client.cmd(target, fun, list(args), kwarg=kwargs or None, timeout=timeout, full_return=True)
        ret = reply.get(target)
        if not ret:
            raise DrillFailed(f"{target} did not answer {fun}")
        return ret.get("ret"), ret.get("retcode", 0)

    def sh(self, script: str, what: str, timeout: int = 900) -> str:
        out, code = self.cmd(self.guest, "cmd.run_all", script, python_shell=True,  # noqa: S604 - the drill's own
                             shell="/bin/bash", timeout=timeout)
        if code or not isinstance(out, dict) or out.get("retcode"):
            detail = out if not isinstance(out, dict) else (out.get("stderr") or out.get("stdout"))
            raise DrillFailed(f"{what} on {self.guest} failed: {str(detail)[-2000:]}")
        return out["stdout"]

    def attach(self, script: str, data: str | None = None) -> subprocess.CompletedProcess:
        """A shell in the guest through the provider (the operator's console), stdin for secrets."""
        return subprocess.run(["lxc-attach", "-P", self.lab.lab_dir, "-n", self.guest, "--clear-env", "--",
                               "env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "bash", "-c", script], input=data, capture_output=True, text=True, timeout=900,
                              check=False)

    # -- preflight ---------------------------------------------------------------------------------
    def preflight(self) -> dict:
        if self.drill.role == "postgresql":
            self.sh(f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {DRILL_DB} -c '{DRILL_ROWS}'",
                    "writing the drill's rows")
        if self.drill.role == "rabbitmq":
            self.add_rabbitmq_queue()
        unit = f"platform-backup@{self.job}.service"
        try:
            self.sh(f"systemctl start {unit}", f"the backup job {self.job}")
        except DrillFailed as exc:
            journal = self.attach(f"journalctl -u {unit} -n 8 --no-pager -o cat").stdout
            raise DrillFailed(f"{exc}\n{journal}") from None
        latest = self.sh(f"platform-restore --check {self.job}", "the repository check")
        self.drill.notes.append(latest.strip().splitlines()[-1][:300])
        return self.fingerprints()

    def fingerprints(self) -> dict:
        if self.drill.role == "postgresql":
            rows = self.sh(PG_FINGERPRINTS, "the tables' fingerprints").splitlines()
            # "<database> <table> <row count> <md5>" -> {"<database> <table>": "<row count> <md5>"}
            return {"tables": {" ".join(line.split()[:2]): " ".join(line.split()[2:]) for line in rows if line.strip()}}
        if self.drill.role == "rabbitmq":
            return rabbitmq_fingerprint(self.rabbitmq_definitions())
        return self.vault_fingerprints()

    def rabbitmq_definitions(self) -> dict:
        out = self.sh(RABBITMQ_EXPORT, "exporting the broker's definitions")
        try:
            return json.loads(out)
        except ValueError:
            raise DrillFailed(f"the broker's definitions on {self.guest} are not JSON: {out[:300]}") from None

    def add_rabbitmq_queue(self) -> None:
        """A durable queue bound to amq.direct in the site's first vhost, added to the broker through its
        own definitions import (no client library in the guest): the restore must bring it back."""
        vhosts = sorted(v["name"] for v in self.rabbitmq_definitions().get("vhosts") or [] if v["name"] != "/")
        if not vhosts:
            raise DrillFailed(f"the broker on {self.guest} has no vhost of the site")
        extra = {"queues": [{"name": RABBITMQ_QUEUE, "vhost": vhosts[0], "durable": True, "auto_delete": False,
                             "arguments": {}}],
                 "bindings": [{"source": "amq.direct", "vhost": vhosts[0], "destination": RABBITMQ_QUEUE,
                               "destination_type": "queue", "routing_key": RABBITMQ_QUEUE, "arguments": {}}]}
        self.sh(f"set -euo pipefail; install -d -o rabbitmq -g rabbitmq -m 0700 /run/platform-drill; "
                f"printf '%s' '{json.dumps(extra)}' > /run/platform-drill/queue.json; "
                f"chown rabbitmq: /run/platform-drill/queue.json; "
                f"rabbitmqctl --quiet import_definitions /run/platform-drill/queue.json; "
                f"rm -f /run/platform-drill/queue.json", "adding the drill's queue")

    def vault_fingerprints(self) -> dict:
        nonce = getattr(self, "_nonce", None) or secrets.token_hex(16)
        self._nonce = nonce
        prints, code = self.cmd(self.guest, "vault_server.secret_fingerprints", nonce)
        if code or not isinstance(prints, dict):
            raise DrillFailed(f"the secrets' fingerprints on {self.guest}: {prints}")
        from sitectl import roles as roles_of

        readable = {}

        grants = roles_of.secret_grants(self.lab.pillar)
        for name, spec in sorted(self.lab.pillar["site"]["guests"].items()):
            if name == self.guest or not all(self.lab.converges(r) for r in spec["roles"]):
                continue
            mine = [p for p in prints if any(p.startswith(f"roles/{r}/") for r in spec["roles"])]
            paths = sorted(set(mine) | set(grants.get(name, [])))
            for path in paths:
                version, code = self.cmd(name, "vault_server.secret_version", path, timeout=120)
                readable[f"{name}:{path}"] = version if not code else f"refused: {str(version)[-200:]}"
        return {"secrets": prints, "readable": readable}

    # -- destroy, recreate -------------------------------------------------------------------------
    def destroy(self) -> None:
        cp = subprocess.run([str(self._salt_cloud()), "-c", str(self.lab.conf), "-d", self.guest, "-y",
                             "--out", "json", "--no-color"], capture_output=True, text=True, check=False)
        if cp.returncode != 0:
            raise DrillFailed(f"salt-cloud -d {self.guest}: {cp.stderr[-2000:]}")
        if self.guest in {g["name"] for g in self.lab.host.list_guests(self.lab.lab_dir)}:
            raise DrillFailed(f"{self.guest} still exists after salt-cloud -d")

    def _salt_cloud(self):
        from pathlib import Path

        return Path(sys.executable).parent / "salt-cloud"

    def recreate(self):
        from sitectl.labctl import HighstateCollector

        collector = HighstateCollector(self.lab.master_opts(), [self.guest])
        collector.start()
        cloud = self.lab.salt_cloud_map([self.guest])
        if cloud.returncode != 0:
            collector.stop.set()
            raise DrillFailed(f"salt-cloud: {cloud.stderr[-2000:]}")
        collector.done.wait(timeout=1200)
        collector.stop.set()
        result = collector.results.get(self.guest)
        if result is None:
            raise DrillFailed(f"no highstate of the new {self.guest} after its created event")
        self.lab.wait_for_minions([self.guest])
        self.after_minion_restart()
        return result

    def after_minion_restart(self, timeout: float = 180, pause: float = 8.0) -> None:
        """Wait until the minion restart the first highstate scheduled (common.minion) is over: a command
        published while the minion restarts is lost (seen: the drill's verify step waited out its 900 s).
        The restart waits for a moment with no job of the minion's, so the checks leave ``pause`` between
        them; after ``timeout`` the drill goes on and its next step says what it finds."""
        from sitectl.bringup import MINION_RESTART_CHECK, minion_restart_over

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(pause)
            if minion_restart_over(self.client.cmd(self.guest, "cmd.run_all", [MINION_RESTART_CHECK],
                                                   timeout=5).get(self.guest)):
                return

    # -- restore -----------------------------------------------------------------------------------
    def restore_postgresql(self) -> None:
        self.sh(f"platform-restore {self.job}", "platform-restore")
        self.sh("set -euo pipefail; folder=$(find /var/backups/postgresql -mindepth 1 -maxdepth 1 -type d "
                "-name '[0-9]*T*Z' | sort | tail -n 1); for dump in \"$folder\"/*.dump; do "
                "db=$(basename \"$dump\" .dump); pg-restore-db --replace \"$db\" \"$folder\"; done",
                "pg-restore-db of every database")

    def restore_rabbitmq(self) -> None:
        self.sh(f"platform-restore {self.job}", "platform-restore")
        self.sh(RABBITMQ_RESTORE, "rabbitmqctl import_definitions")

    def restore_vault(self, password: str) -> None:
        from sitectl.vaultctl import LabVault, state_kwargs

        vault = LabVault(self.lab, self.guest)
        pw_file = "/run/platform-restore/vault.password"
        cp = self.attach(f"umask 077; mkdir -p /run/platform-restore; cat > {pw_file}; "
                         f"RESTIC_PASSWORD_FILE={pw_file} platform-restore {self.job}; rc=$?; rm -f {pw_file}; "
                         f"exit $rc", data=password + "\n")
        if cp.returncode:
            raise DrillFailed(f"platform-restore {self.job} on {self.guest}: {cp.stderr[-2000:]}")
        high, _ = self.cmd(self.guest, "state.show_sls", "vault.backup")
        script = state_kwargs(high["vault-backup-script-managed"])["context"]
        unit = state_kwargs(high["vault-backup-service-managed"])["context"]["service"]
        # The restored TLS folder (the CA the master trusts) is served from here on.
        self.sh(f"systemctl restart {unit}", f"restarting {unit} on the restored TLS files")
        snapshot = self.sh(f"ls -1 {script['dir']}/vault-raft-*.snap | sort | tail -n 1", "the restored snapshot")
        cp = subprocess.run(["lxc-attach", "-P", self.lab.lab_dir, "-n", self.guest, "--clear-env", "--",
                             "python3", "-c", VAULT_RESTORE, script["addr"], script["cacert"], script["binary"],
                             snapshot.strip()], capture_output=True, text=True, timeout=600, check=False)
        if cp.returncode:
            raise DrillFailed(f"raft snapshot restore on {self.guest}: {cp.stderr[-2000:]}")
        # The restored keyring is the old Vault's: the server seals itself a moment after the restore
        # and opens again only with the operators' shares.
        self._wait_sealed(vault, True)
        vault.unseal_again()
        self._wait_sealed(vault, False)
        # Tokens issued after the snapshot do not exist in the restored Vault: the master drops the
        # ones it keeps (its own login among them; docs/backup.md, restoring Vault). The minions'
        # kept tokens are looked up and replaced on their next use (vault_server).
        import salt.runner

        with salt.runner.RunnerClient(self.lab.master_opts()) as runner:
            runner.cmd("vault.clear_cache", print_event=False)

    def _wait_sealed(self, vault, sealed: bool, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while vault.server_status()["sealed"] is not sealed:
            if time.monotonic() > deadline:
                raise DrillFailed(f"Vault on {self.guest} did not become {'sealed' if sealed else 'unsealed'} "
                                  f"within {timeout} s of the restore")
            time.sleep(1)

    def converge(self):
        result = self.lab.highstate([self.guest])[self.guest]
        if result.failed:
            raise DrillFailed(f"the highstate of {self.guest} after the restore failed: {result.errors[:5]}")
        return result

    def backup_password(self) -> str:
        """The operator's written-down copy of Vault's own repository password (docs/backup.md): the
        lab's operator takes it from the guest's job file before the drill destroys it (through the
        provider's console, not a Salt job: no job cache holds it), in memory only."""
        cp = self.attach(f"cat /etc/platform-backup/{self.job}.password")
        if cp.returncode or not cp.stdout.strip():
            raise DrillFailed(f"Vault's backup password is not on {self.guest}: {cp.stderr[-500:]}")
        return cp.stdout.strip()

    # -- the drill ---------------------------------------------------------------------------------
    def run(self) -> Drill:
        d = self.drill
        before = d.timed("preflight", self.preflight)
        password = self.backup_password() if d.role == "vault" else None
        d.timed("destroy", self.destroy)
        first = d.timed("recreate", self.recreate)
        d.notes.append(f"first highstate of the new guest: ok {first.ok}, changed {first.changed}, "
                       f"failed {first.failed} (Vault: expected to wait for its operator)")
        if d.role in ("postgresql", "rabbitmq"):
            if first.failed:
                raise DrillFailed(f"the first highstate of the new {self.guest} failed: {first.errors[:5]}")
            d.timed("restore", self.restore_postgresql if d.role == "postgresql" else self.restore_rabbitmq)
        else:
            d.timed("restore", self.restore_vault, password)
            d.timed("converge", self.converge)
        after = d.timed("verify", self.fingerprints)
        self.compare(before, after)
        return d

    def compare(self, before: dict, after: dict) -> None:
        if self.drill.role == "postgresql":
            lost = {t: v for t, v in before["tables"].items() if after["tables"].get(t) != v}
            if lost:
                raise DrillFailed(f"tables differ after the restore: {lost}")
            if not any(t.endswith(DRILL_TABLE) for t in before["tables"]):
                raise DrillFailed("the drill's own table was not among the fingerprints")
            self.drill.notes.append(f"{len(before['tables'])} tables identical (row count and md5)")
            return
        if self.drill.role == "rabbitmq":
            lost = {k: sorted(set(v) - set(after.get(k) or [])) for k, v in before.items()}
            lost = {k: v for k, v in lost.items() if v}
            if lost:
                raise DrillFailed(f"the broker's definitions differ after the restore: {lost}")
            if not any(json.loads(q)["name"] == RABBITMQ_QUEUE for q in before["queues"]):
                raise DrillFailed("the drill's own queue was not among the definitions")
            self.drill.notes.append(f"{len(before['users'])} users (tags, password hashes), "
                                    f"{len(before['vhosts'])} vhosts, {len(before['permissions'])} permissions, "
                                    f"{len(before['queues'])} queues and {len(before['bindings'])} bindings back")
            return
        lost = {p: v for p, v in before["secrets"].items() if after["secrets"].get(p) != v}
        if lost or not before["secrets"]:
            raise DrillFailed(f"secrets differ after the restore: {sorted(lost)}")
        refused = {k: v for k, v in after["readable"].items() if before["readable"].get(k) != v}
        if refused:
            raise DrillFailed(f"guests read otherwise after the restore: {refused}")
        self.drill.notes.append(f"{len(before['secrets'])} secrets identical (HMAC); "
                                f"{len(before['readable'])} guest/path reads answered as before")


def report(d: Drill, out=sys.stdout) -> None:
    print(f"\nrecovery drill of {d.guest} (role {d.role}):", file=out)
    for name, seconds in d.phases.items():
        print(f"  {name:<10} {seconds:>7.1f} s", file=out)
    print(f"  {'recovery':<10} {d.recovery_seconds:>7.1f} s  (destroy to verified)", file=out)
    for note in d.notes:
        print(f"  - {note}", file=out)


def drill(guest: str, site: str = "example", state_dir=None) -> int:
    from sitectl.labctl import Lab

    lab = Lab(site, state_dir)
    lab.configure()
    try:
        runner = Runner(lab, guest)
        d = runner.run()
    except DrillFailed as exc:
        print(f"DRILL FAILED: {exc}", file=sys.stderr)
        if "runner" in locals():
            report(runner.drill)
        return 1
    report(d)
    (lab.settings.state_dir / f"drill-{guest}.json").write_text(json.dumps(
        {"guest": d.guest, "role": d.role, "phases": d.phases, "recovery_seconds": d.recovery_seconds,
         "notes": d.notes}, indent=2))
    return 0
