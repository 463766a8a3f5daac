"""The Vault bootstrap an operator does once per site (docs/vault.md, steps 3-5), as functions.

The lab plays the operator with a throwaway key pair (``LabVault``); the tests use the same pieces
against their own OpenBao servers. Nothing here prints or logs a key share, a token or a
credential: they travel in files of mode 0600 and through stdin, never on a command line.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

# The states of vault.configure (salt/vault/configure.sls) the root-token holder applies once: the
# policies the master and the vault guest's own token need, and the master's AppRole. Everything
# else the vault guest then writes itself with its master-issued token.
BOOTSTRAP_IDS = (
    "vault-configure-approle-enabled",
    "vault-configure-approle-salt-master-present",
    "vault-configure-policy-salt-master-present",
    "vault-configure-policy-raft-snapshot-present",
    "vault-configure-policy-role-vault-present",
)


def state_kwargs(state: dict) -> dict:
    """Every argument of one state of a compiled highstate, with the function as ``__fun__``."""
    (module,) = (key for key in state if not key.startswith("__"))
    kwargs: dict = {"__fun__": f"{module}.{next(item for item in state[module] if isinstance(item, str))}"}
    for item in state[module]:
        if isinstance(item, dict):
            kwargs.update(item)
    return kwargs


def state_call(state: dict) -> tuple[str, str | None, dict]:
    """(module.function, name, kwargs) of one state of a compiled highstate, requisites dropped."""
    kwargs = state_kwargs(state)
    fun = kwargs.pop("__fun__")
    for key in ("require", "watch", "onchanges", "retry", "url", "verify"):
        kwargs.pop(key, None)
    return fun, kwargs.pop("name", None), kwargs


def bootstrap_states(high: dict, ids=BOOTSTRAP_IDS) -> list[tuple[str, str, str | None, dict]]:
    """The bootstrap states of ``high`` (vault.configure as rendered for the vault guest), in order:
    (state id, module.function, name, kwargs). Fails when the rendered tree lacks one of them."""
    if not isinstance(high, dict):
        raise RuntimeError(f"vault.configure did not render: {high}")
    missing = [i for i in ids if i not in high]
    if missing:
        raise RuntimeError(f"vault.configure lacks the bootstrap states {missing}")
    return [(i, *state_call(high[i])) for i in ids]


def write_private(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to a new or existing file that is mode 0600 before any byte lands in it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


class Operators:
    """Operator key pairs in a GNUPGHOME of their own (throwaway: tests and the lab).

    ``keyring`` (a file, 0600) keeps the secret keys between runs, so the lab can unseal again
    after a restart; without it the keys live only as long as this object.
    """

    EMAIL = "{name}@operators.test"

    def __init__(self, names, keyring: Path | None = None):
        # gpg-agent's socket lives in the home: keep its path short (not under a deep state dir).
        self.home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
        self.home.chmod(0o700)
        self.names = list(names)
        if keyring and keyring.is_file():
            self.gpg("--import", input=keyring.read_bytes())
            return
        spec = "".join(
            f"Key-Type: RSA\nKey-Length: 2048\nSubkey-Type: RSA\nSubkey-Length: 2048\n"
            f"Name-Real: {name}\nName-Email: {self.EMAIL.format(name=name)}\nExpire-Date: 0\n"
            "%no-protection\n%commit\n"
            for name in self.names
        )
        self.gpg("--gen-key", input=spec)
        if keyring:
            write_private(keyring, self.gpg("--armor", "--export-secret-keys"))

    def gpg(self, *args, input: str | bytes | None = None) -> bytes:
        data = input.encode() if isinstance(input, str) else input
        out = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--quiet", *args],
                             input=data, capture_output=True, check=False)
        if out.returncode:
            raise RuntimeError(f"gpg {args[0]}: {out.stderr.decode(errors='replace')[-500:]}")
        return out.stdout

    def public_key(self, name: str) -> str:
        return self.gpg("--armor", "--export", self.EMAIL.format(name=name)).decode()

    def decrypt(self, ciphertext_b64: str) -> str:
        data = base64.b64decode(ciphertext_b64)
        try:
            return self.gpg("--decrypt", input=data).decode().strip()
        except RuntimeError:
            # Seen once under load: the agent of this home answered "No secret key" for a key it
            # holds. A fresh agent reads the key files again.
            subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False,
                           capture_output=True)
            return self.gpg("--decrypt", input=data).decode().strip()

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], check=False,
                       capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Operators:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def master_credentials(config_dir: Path, url: str, ca_pem: str, role_id: str, secret_id: str) -> None:
    """The master's side of the bootstrap (docs/vault.md, step 5): the AppRole credentials in a file
    of their own (0600) and the sdb profile `platform_vault` in master.d/vault.conf pointing at it.
    etc/master.j2's `vault:` block reads them; restart the master afterwards."""
    credentials = write_private(config_dir / "vault-master.yaml", yaml.safe_dump(
        {"url": url, "verify": ca_pem, "role_id": role_id, "secret_id": secret_id}))
    (config_dir / "master.d").mkdir(exist_ok=True)
    (config_dir / "master.d" / "vault.conf").write_text(
        "# Written by the Vault bootstrap (docs/vault.md): only the sdb profile, never a `vault:` key.\n"
        + yaml.safe_dump({"platform_vault": {"driver": "yaml", "files": [str(credentials)]}}))
    forget_master_vault_cache(config_dir)


def forget_master_credentials(config_dir: Path) -> None:
    for path in (config_dir / "master.d" / "vault.conf", config_dir / "vault-master.yaml"):
        path.unlink(missing_ok=True)
    forget_master_vault_cache(config_dir)


def forget_master_vault_cache(config_dir: Path) -> None:
    """saltext-vault's cache on the master (its own token and the server's config, under
    ``<cachedir>/vault``): with new credentials or a new Vault, a token still within its TTL would
    be sent to a server that never issued it (permission denied on every guest's token request)."""
    import salt.config

    cachedir = Path(salt.config.master_config(str(config_dir / "master"))["cachedir"])
    shutil.rmtree(cachedir / "vault", ignore_errors=True)


class LabVault:
    """The lab as the operator of its own Vault: one throwaway operator ("lab") holds the only
    unseal share and the root token; the ciphertext and the key ring stay in the lab's state dir.

    Sequence (docs/vault.md "Bootstrap of a new site", steps 3-5): initialise from the master to
    PGP ciphertext; decrypt the share into a 0600 file on the guest's /run, apply vault.unseal
    with that path in pillar, remove the file; with the root token apply the bootstrap states of
    vault.configure, create the master's AppRole credentials and the backup timer's snapshot token;
    revoke the root token; the master is restarted by the caller.
    """

    OPERATOR = "lab"
    SHARE_FILE = "/run/vault-unseal/lab"

    def __init__(self, lab, guest: str):
        self.lab = lab
        self.guest = guest
        self.dir = lab.settings.state_dir / "vault-init"
        self.init_file = self.dir / f"{lab.settings.site}.json"
        self.keyring = self.dir / "lab-operator.asc"
        self.ca_file = self.dir / "ca.crt"

    # -- what the guest says ---------------------------------------------------------------------
    def _client(self):
        import salt.client

        return salt.client.LocalClient(mopts=self.lab.master_opts())

    def _guest_cmd(self, fun: str, *args, timeout: int = 120, **kwargs):
        reply = self._client().cmd(self.guest, fun, list(args), kwarg=kwargs or None, timeout=timeout,
                                   full_return=True)
        ret = reply.get(self.guest)
        if not ret:
            raise RuntimeError(f"{self.guest} did not answer {fun}")
        return ret.get("ret"), ret.get("retcode", 0)

    def endpoint(self) -> tuple[str, str, str]:
        """(url on the guest's address, the guest's local url, its CA certificate path)."""
        high, _ = self._guest_cmd("state.show_sls", "vault.unseal")
        if not isinstance(high, dict) or "vault-unseal-unsealed" not in high:
            raise RuntimeError(f"vault.unseal does not render on {self.guest}: {high}")
        args = state_kwargs(high["vault-unseal-unsealed"])
        local_url = args["url"]
        address = self.lab.pillar["site"]["guests"][self.guest]["address"].split("/")[0]
        port = local_url.rsplit(":", 1)[1]
        return f"https://{address}:{port}", local_url, args["verify"]

    def server_status(self, attempts: int = 6, pause: float = 5.0) -> dict:
        """The Vault module's own seal status on the guest (initialized, sealed, ...), no token. The
        guest's minion may be restarting after its highstate (common.minion): asked again, bounded."""
        for attempt in range(1, attempts + 1):
            try:
                _, local_url, ca_path = self.endpoint()
                status, retcode = self._guest_cmd("vault_server.status", url=local_url, verify=ca_path)
                break
            except RuntimeError:
                if attempt == attempts:
                    raise
                time.sleep(pause)
        if retcode or not isinstance(status, dict) or "initialized" not in status:
            raise RuntimeError(f"vault_server.status failed on {self.guest}: {status}")
        return status

    def _put_guest_file(self, path: str, data: str, mode: str = "0600") -> None:
        """Through stdin of lxc-attach: the value never appears on a command line or in a job."""
        script = f"umask 077; mkdir -p \"$(dirname {path})\"; cat > {path}.tmp && chmod {mode} {path}.tmp && " \
                 f"mv {path}.tmp {path}"
        subprocess.run(["lxc-attach", "-P", self.lab.lab_dir, "-n", self.guest, "--clear-env", "--",
                        "/bin/sh", "-c", script], input=data.encode(), check=True, capture_output=True)

    def _remove_guest_file(self, path: str) -> None:
        subprocess.run(["lxc-attach", "-P", self.lab.lab_dir, "-n", self.guest, "--clear-env", "--",
                        "rm", "-f", path], check=False, capture_output=True)

    def _operator_caller(self, url: str, token_file: Path | None):
        from sitectl import render

        server = {"url": url, "verify": str(self.ca_file)}
        if token_file:
            server["token_file"] = str(token_file)
        return render.caller(self.lab.conf, "sitectl-vault-operator", overrides={"vault_server": server})

    # -- the sequence ----------------------------------------------------------------------------
    def bootstrapped(self) -> bool:
        return self.init_file.is_file()

    def unseal(self, operators: Operators, init: dict) -> None:
        share = operators.decrypt(init["unseal_keys_pgp"][0])
        try:
            self._put_guest_file(self.SHARE_FILE, share + "\n")
            ret, retcode = self._guest_cmd(
                "state.apply", "vault.unseal", pillar={"vault": {"unseal": {"key_files": [self.SHARE_FILE]}}},
                timeout=300)
        finally:
            self._remove_guest_file(self.SHARE_FILE)
        bad = [f"{s.get('__id__')}: {s.get('comment')}" for s in (ret or {}).values()
               if isinstance(s, dict) and s.get("result") is False] if isinstance(ret, dict) else [str(ret)]
        if retcode or bad:
            raise RuntimeError(f"vault.unseal failed on {self.guest}: {bad}")

    def unseal_again(self) -> None:
        """After a restart of the guest: the operator's share once more (docs/vault.md, 'Unseal')."""
        with Operators([self.OPERATOR], keyring=self.keyring) as operators:
            self.unseal(operators, json.loads(self.init_file.read_text()))

    def bootstrap(self) -> dict[str, float]:
        """Initialise, unseal, bootstrap the master; returns the seconds each step took."""
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        url, _, ca_path = self.endpoint()
        ca_pem, _ = self._guest_cmd("file.read", ca_path)
        if not isinstance(ca_pem, str) or "BEGIN CERTIFICATE" not in ca_pem:
            raise RuntimeError(f"no CA certificate at {self.guest}:{ca_path}: {ca_pem}")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca_file.write_text(ca_pem)
        with Operators([self.OPERATOR], keyring=self.keyring) as operators:
            public = operators.public_key(self.OPERATOR)
            caller = self._operator_caller(url, None)
            if not self.init_file.is_file():
                init = caller.cmd("vault_server.initialize", [public], public, str(self.init_file),
                                  secret_threshold=1, url=url, verify=str(self.ca_file))
                if not isinstance(init, dict):
                    raise RuntimeError(f"initialise: {init}")
            init = json.loads(self.init_file.read_text())
            timings["init"] = round(time.monotonic() - t0, 1)

            t0 = time.monotonic()
            self.unseal(operators, init)
            timings["unseal"] = round(time.monotonic() - t0, 1)

            t0 = time.monotonic()
            token_file = self.dir / "root.token"
            write_private(token_file, operators.decrypt(init["root_token_pgp"]))
            try:
                self._with_root_token(url, ca_pem, token_file)
            finally:
                token_file.unlink(missing_ok=True)
            timings["master_bootstrap"] = round(time.monotonic() - t0, 1)
        return timings

    def _with_root_token(self, url: str, ca_pem: str, token_file: Path) -> None:
        import hvac

        high, _ = self._guest_cmd("state.show_sls", "vault.configure")
        caller = self._operator_caller(url, token_file)
        for state_id, fun, name, kwargs in bootstrap_states(high):
            ret = caller.cmd("state.single", fun, name, **kwargs)
            (result,) = ret.values() if isinstance(ret, dict) else ([{"result": False, "comment": ret}])
            if result.get("result") is not True:
                raise RuntimeError(f"{state_id}: {result.get('comment')}")
        client = hvac.Client(url=url, token=token_file.read_text().strip(), verify=str(self.ca_file))
        approle = client.auth.approle
        role_id = approle.read_role_id("salt-master")["data"]["role_id"]
        secret_id = approle.generate_secret_id("salt-master")["data"]["secret_id"]
        master_credentials(self.lab.conf, url, ca_pem, role_id, secret_id)
        # The backup timer's token: snapshots only, periodic, not a child of the root token.
        snapshot = client.auth.token.create_orphan(policies=["raft_snapshot"], period="72h",
                                                   meta={"purpose": "raft-snapshot"})["auth"]["client_token"]
        high, _ = self._guest_cmd("state.show_sls", "vault.backup")
        script = state_kwargs(high["vault-backup-script-managed"])["context"]
        self._put_guest_file(script["token_file"], snapshot + "\n")
        client.auth.token.revoke_self()


def lab_teardown(state_dir: Path, config_dir: Path) -> None:
    """What a lab's Vault leaves on the host: ciphertext, the throwaway key ring, the master's creds."""
    shutil.rmtree(state_dir / "vault-init", ignore_errors=True)
    forget_master_credentials(config_dir)
