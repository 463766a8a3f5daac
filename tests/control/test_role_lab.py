"""The ``salt_master`` role converging a scratch-lab guest into a working Salt master, with nothing
of it done by hand but what the operator does (docs/control.md, docs/vault.md):

- the owner's repository is a bare repository on a third guest served over SSH (``git-shell``): the
  role clones it at ``main`` with the deploy key it reads from the dev OpenBao at apply time, trusting
  only that server's pinned host key;
- the master's venv is installed from the checkout (``pip install -e``) out of the lab's wheelhouse,
  the one the guests' minions were built from (the same pinned Salt);
- the master config comes from ``etc/master.j2`` through ``sitectl master-config`` with the
  salt-cloud provider whose Proxmox token secret is an ``sdb://`` URI, read from Vault at run time over
  the master's own AppRole (which the test, as Vault's operator, makes and writes);
- the service runs; a second apply changes nothing.

Then the runner guest's minion, its key pre-seeded on that master the way the project's cloud
driver does it (the pair made on the master, the public key accepted there, the pair put in the
guest before its minion starts), answers ``test.ping`` and its highstate through that master
converges and, run again, changes nothing. Secret values are made at run time and never appear in
the apply's output or in the master's config files."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sitectl import ROOT
from tests.scratchlab import guest_ip, guest_pillar, scratch_site, wait_for_minion_restart

pytestmark = pytest.mark.lab

CONTROL, WEB, GIT = "control", "runner", "gitserver"
TOKEN_REF = "vault:platform/proxmox#token_secret"  # noqa: S105 (a Vault reference, not a secret)
SITE = scratch_site({CONTROL: {"host": 110, "roles": ["salt_master"]},
                     WEB: {"host": 107, "roles": ["gitlab_runner"]},
                     GIT: {"host": 109, "roles": ["gitlab_runner"]}},
                    proxmox={"api": "https://pve.lab.example.org:8006", "node": "pve",
                             "token_id": "salt@pve!platform", "token_secret": TOKEN_REF})
SITE["salt"] = {"master": guest_ip(SITE, CONTROL)}  # the control guest's master, not the lab host's
# As pillar/overlays/lab.sls: Debian's docker.io, and GitLab Runner not installed (no build reachable).
ROLE_SETTINGS = {"gitlab_runner": {"install": {"converge": False, "reason": "GitLab's apt repository is unreachable"}},
                 "docker": {"flavor": "debian"}}
CHECKOUT = "/srv/salt-platform"
ETC = f"{CHECKOUT}/.salt/etc"
SALT = [f"{CHECKOUT}/.venv/bin/salt", "-c", ETC]
ORIGIN = "/srv/git/salt-platform.git"
MASTER_POLICY = """
path "auth/token/create" { capabilities = ["create", "read", "update", "sudo"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "sys/policies/acl/salt_*" { capabilities = ["read"] }
path "secret/data/platform/proxmox" { capabilities = ["read"] }
"""


def _git(*args: str, cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, capture_output=True)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> bytes:
    """The owner's repository as a bare repository (a tar of it): this checkout's HEAD on ``main``
    with the scratch site committed."""
    work = tmp_path_factory.mktemp("control-origin")
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    _git("checkout", "-q", "-B", "main", cwd=repo)
    (repo / "pillar" / "site" / "scratch.sls").write_text(yaml.safe_dump({"site": SITE, **ROLE_SETTINGS}))
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "the scratch site", cwd=repo)
    _git("clone", "-q", "--bare", "--branch", "main", str(repo), str(work / "salt-platform.git"), cwd=work)
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(work / "salt-platform.git", arcname="salt-platform.git")
    return buf.getvalue()


def _deploy_key() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


@pytest.fixture(scope="module")
def lab(scratch_lab, wheelhouse, origin):
    """Three guests; the git server with the bare repository, the deploy key's public half and sshd;
    the dev OpenBao with the deploy key, the Proxmox token's secret (both made now) and the master's
    AppRole; the control guest with the role's pillar."""
    scratch_lab.start_guests(SITE, CONTROL, WEB, GIT)
    bao = scratch_lab.start_vault()
    private, public = _deploy_key()
    bao.write("roles/salt_master/deploy_key", private_key=private)
    token_secret = secrets.token_hex(18)
    bao.write("platform/proxmox", token_secret=token_secret)

    scratch_lab.apt_install(GIT, "openssh-server", "git")
    scratch_lab.sh(GIT, "id git >/dev/null 2>&1 || useradd -m -s /usr/bin/git-shell git; mkdir -p /srv/git "
                        "&& tar -x -C /srv/git && chown -R git:git /srv/git", input=origin)
    scratch_lab.write_file(GIT, "/home/git/.ssh/authorized_keys", f"restrict {public}\n", mode=0o600)
    scratch_lab.sh(GIT, "chown -R git:git /home/git/.ssh && chmod 0700 /home/git/.ssh && systemctl restart ssh")
    host_key = " ".join(scratch_lab.sh(GIT, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])

    scratch_lab.sh(CONTROL, "mkdir -p /root && tar -x -C /root", input=wheelhouse)
    role = {"salt_master": {
        "repository": {"url": f"git@{guest_ip(SITE, GIT)}:{ORIGIN}",
                       "known_hosts": [f"{guest_ip(SITE, GIT)} {host_key}"]},
        # The lab's wheelhouse (the guests may not reach PyPI); the wheels need no compiler.
        "install": {"packages": ["python3-venv"], "pip_options": ["--no-index", "--find-links", "/root/wheels"]},
    }}
    bao.policy("salt_master_test_reader", 'path "secret/data/roles/salt_master/*" { capabilities = ["read"] }')
    scratch_lab.push_salt(CONTROL, guest_pillar(SITE, CONTROL, {**role, **ROLE_SETTINGS}),
                          vault_token=bao.token(["salt_master_test_reader"]))
    scratch_lab.secrets = {"deploy key": private.strip(), "token secret": token_secret}
    return scratch_lab


def _operator_writes_the_approle(lab) -> None:
    """docs/vault.md, step 5: the master's AppRole, its credentials in .salt/etc/vault-master.yaml."""
    client = lab.bao.client()
    client.sys.enable_auth_method("approle")
    lab.bao.policy("salt_master", MASTER_POLICY)
    client.auth.approle.create_or_update_approle("salt-master", token_policies=["salt_master"],
                                                token_ttl="1h")  # noqa: S106 (a TTL)
    role_id = client.auth.approle.read_role_id("salt-master")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("salt-master")["data"]["secret_id"]
    creds = yaml.safe_dump({"url": lab.bao.url, "verify": False, "role_id": role_id, "secret_id": secret_id})
    lab.sh(CONTROL, f"umask 077 && cat > {ETC}/vault-master.yaml", input=creds)


def _scheduled_restart_done(lab, timeout: float = 90) -> None:
    """Wait until the restart the role scheduled (restart_delay) has run and the master is up."""
    deadline = time.monotonic() + timeout
    while lab.sh(CONTROL, "systemctl is-active salt-master-restart.timer salt-master-restart.service "
                          "salt-master", check=False).stdout.split() != ["inactive", "inactive", "active"]:
        assert time.monotonic() < deadline, "the master did not come up after its scheduled restart"
        time.sleep(2)


@pytest.fixture(scope="module")
def applies(lab):
    """The first apply; the operator's step 5 on the running master; the apply after it, which makes
    the master load the credentials (Salt reads sdb:// values at start); one more, which changes nothing."""
    first = lab.apply(CONTROL, "salt_master")
    _scheduled_restart_done(lab)
    _operator_writes_the_approle(lab)
    loaded = lab.apply(CONTROL, "salt_master")
    _scheduled_restart_done(lab)
    return first, loaded, lab.apply(CONTROL, "salt_master")


def test_the_role_converges_the_guest_into_a_running_master_and_a_second_apply_changes_nothing(lab, applies):
    first, loaded, again = applies
    assert not first.failed, first.failed
    assert {"salt-master-checkout-cloned", "salt-master-install-venv-installed", "salt-master-config-rendered",
            "salt-master-service-running"} <= set(first.changed), sorted(first.changed)
    assert not loaded.failed and set(loaded.changed) == {
        "salt-master-config-approle-loaded", "salt-master-service-restart-scheduled"}, loaded.changed
    assert not again.failed and again.changed == {}, again.changed
    assert lab.sh(CONTROL, "systemctl is-active salt-master").stdout.strip() == "active"
    assert lab.sh(CONTROL, f"git -C {CHECKOUT} rev-parse --abbrev-ref HEAD").stdout.strip() == "main"
    assert lab.sh(CONTROL, f"git -C {CHECKOUT} log -1 --format=%s").stdout.strip() == "the scratch site"
    pinned = lab.sh(CONTROL, f"sed -n 's/^ *\"salt==\\([0-9.]*\\)\",$/\\1/p' {CHECKOUT}/pyproject.toml").stdout.strip()
    minion = lab.sh(CONTROL, "/opt/saltstack/salt/bin/salt-call --version").stdout.split()[1]
    assert lab.sh(CONTROL, f"{CHECKOUT}/.venv/bin/salt-master --version").stdout.split()[1] == pinned == minion
    master = yaml.safe_load(lab.sh(CONTROL, f"cat {ETC}/master").stdout)
    assert master["interface"] == guest_ip(SITE, CONTROL) and master["platform_site"] == "scratch"
    assert master["file_roots"]["base"][0] == f"{CHECKOUT}/salt", "the master serves the checkout"
    assert {"salt/cloud/*/created", "platform/acme/renewed"} <= {next(iter(r)) for r in master["reactor"]}
    provider = yaml.safe_load(lab.sh(CONTROL, f"cat {ETC}/cloud.providers.d/platform.conf").stdout)["platform"]
    assert provider["token_secret"] == "sdb://platform_proxmox/secret/platform/proxmox/token_secret"  # noqa: S105
    assert lab.sh(CONTROL, f"stat -c %a {ETC}/vault-master.yaml /root/.ssh/salt-platform-deploy").stdout.split() \
        == ["600", "600"]


def test_no_secret_in_the_apply_output_or_the_master_config(lab, applies):
    files = lab.sh(CONTROL, f"cat {ETC}/master {ETC}/master.d/*.conf {ETC}/cloud.providers.d/*.conf").stdout
    for what, value in lab.secrets.items():
        for apply in applies:
            assert value not in apply.raw, f"the {what} is in the apply's output"
        assert value not in files, f"the {what} is in the master's config"


def test_salt_cloud_reads_the_proxmox_token_from_vault_at_run_time(lab, applies):
    """What the proxmox_platform driver does with an sdb:// token_secret (salt.utils.sdb.sdb_get with
    the master's opts), run by the master's own venv and config: the value comes over the AppRole."""
    script = ("import salt.config, salt.loader, salt.utils.sdb, sys\n"
              f"opts = salt.config.cloud_config('{ETC}/cloud')\n"
              "utils = salt.loader.utils(opts)\n"
              "conf = opts['providers']['platform']['proxmox_platform']['token_secret']\n"
              "sys.stdout.write(salt.utils.sdb.sdb_get(conf, opts, utils) or '')\n")
    got = lab.sh(CONTROL, f"{CHECKOUT}/.venv/bin/python -", input=script).stdout
    assert got == lab.secrets["token secret"]


def _salt(lab, *args: str, wait: int = 10) -> dict:
    out = lab.attach(CONTROL, [*SALT, "-t", str(wait), "--out=json", "--static", *args], check=False, timeout=1200)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"_cli": f"rc {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"}


def _answers(lab, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _salt(lab, WEB, "test.ping").get(WEB) is not True:
        assert time.monotonic() < deadline, "the guest does not answer the control guest's master"
        time.sleep(3)


@pytest.fixture(scope="module")
def through_control(lab, applies) -> tuple[object, object]:
    """The runner guest's key pre-seeded on the control guest's master (as the cloud driver does),
    its minion pointed there; two highstates through that master."""
    pki = f"{CHECKOUT}/.salt/pki/master/minions"
    lab.sh(CONTROL, f"set -e; d=$(mktemp -d); {SALT[0]}-key -c {ETC} --gen-keys={WEB} --gen-keys-dir=$d >/dev/null; "
                    f"cp $d/{WEB}.pub {pki}/{WEB}; tar -C $d -c . > /root/{WEB}-seed.tar; rm -rf $d")
    seed = lab.attach(CONTROL, ["cat", f"/root/{WEB}-seed.tar"]).stdout
    lab.sh(CONTROL, f"rm -f /root/{WEB}-seed.tar")
    lab.sh(WEB, f"set -e; d=$(mktemp -d); tar -x -C $d; install -m 0400 $d/{WEB}.pem /etc/salt/pki/minion/minion.pem; "
                f"install -m 0644 $d/{WEB}.pub /etc/salt/pki/minion/minion.pub; rm -rf $d", input=seed)
    lab.write_file(WEB, "/etc/salt/minion.d/master.conf",
                   f"master: {guest_ip(SITE, CONTROL)}\nid: {WEB}\nhash_type: sha256\n")
    lab.sh(WEB, "systemctl restart salt-minion")
    _answers(lab)
    first = _salt(lab, WEB, "state.highstate", wait=900)
    wait_for_minion_restart(lab, WEB)  # scheduled by the first highstate (common.minion) when needed
    _answers(lab)
    return first.get(WEB, first), _salt(lab, WEB, "state.highstate", wait=900).get(WEB)


def test_a_guest_with_its_key_pre_seeded_answers_that_master(lab, through_control):
    keys = lab.sh(CONTROL, f"{SALT[0]}-key -c {ETC} --out=json -L").stdout
    assert WEB in json.loads(keys)["minions"]
    assert _salt(lab, WEB, "test.ping") == {WEB: True}


def test_a_highstate_through_that_master_converges_and_the_second_changes_nothing(through_control):
    first, second = through_control
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    failed = {k: v["comment"] for k, v in first.items() if v["result"] is not True}
    assert not failed, failed
    assert {"common.firewall", "docker.service"} <= {v["__sls__"] for v in first.values()}, \
        "the highstate came from that master's checkout"
    assert not [k for k, v in second.items() if v["changes"] or v["result"] is not True], \
        "the second highstate through the control guest's master changed something"


def test_the_master_issues_the_guest_a_vault_token_over_its_approle(lab, through_control):
    """saltext-vault's issuing through the control guest's master: the guest asks that master, which
    creates its token over the AppRole the operator gave it, with the guest's own policy."""
    value = secrets.token_hex(12)
    lab.bao.policy(f"salt_minion_{WEB}", f'path "secret/data/minions/{WEB}/*" {{ capabilities = ["read"] }}')
    lab.bao.write(f"minions/{WEB}/probe", value=value)
    got = lab.attach(WEB, ["salt-call", "--out=json", "vault.read_secret", f"secret/minions/{WEB}/probe", "key=value"],
                     check=False)
    log = lab.sh(CONTROL, f"grep -v DEBUG {CHECKOUT}/.salt/log/master | tail -n 60").stdout
    assert json.loads(got.stdout or "{}").get("local") == value, got.stdout[-2000:] + got.stderr[-2000:] + log
    denied = lab.attach(WEB, ["salt-call", "--out=json", "vault.read_secret", "secret/platform/proxmox",
                              "key=token_secret"], check=False)
    assert denied.returncode != 0 and lab.secrets["token secret"] not in denied.stdout + denied.stderr, \
        "the guest's token reads only its own policy's paths"


def test_the_masters_reactor_runs_the_checkouts_runner_on_an_event(lab, through_control):
    """etc/master.j2's reactor on the control guest's master: a `platform/acme/renewed` event from a
    guest runs reactor/acme-renewed.sls, whose runner (_runners/acme.py, from the checkout) finds no
    reverse proxy with that lineage in this site and says so in the master's log."""
    lineage = f"probe-{secrets.token_hex(4)}.lab.example.org"
    lab.attach(WEB, ["salt-call", "event.send", "platform/acme/renewed", f"lineage={lineage}"])
    expected = f"acme: no reverse proxy of the site has the lineage {lineage}"
    deadline = time.monotonic() + 90
    while expected not in lab.sh(CONTROL, f"cat {CHECKOUT}/.salt/log/master").stdout:
        assert time.monotonic() < deadline, "the reactor's runner never ran on the control guest's master"
        time.sleep(3)
