"""A real ACME server for the lab: Debian's pebble, with pebble-challtestsrv as its DNS server.

Every name resolves to one address (the lab's reverse proxy), so pebble validates http-01 against
that guest; both listen on the lab bridge's address only. Debian's pebble has no certificate for
its own HTTPS endpoint: one is made here with openssl at start (throwaway, in ``workdir``); it is
the CA bundle an ACME client must trust (``site.acme.ca_bundle``). The root pebble signs with
changes on every start: ``root`` holds the current one, fetched from the management port.

    acme = Pebble(workdir, "10.77.95.1", answer="10.77.95.100").start()
    acme.directory          # https://10.77.95.1:14000/dir
    acme.tls_cert.read_text()  # for site.acme.ca_bundle
    acme.root               # verify served certificates against this
    acme.stop()             # only the processes it started, by PID
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from ._util import LabError, host_env, run


class Pebble:
    def __init__(self, workdir: Path, address: str, answer: str, acme_port: int = 14000, mgmt_port: int = 15000,
                 dns_port: int = 8053, dns_mgmt_port: int = 8055):
        self.workdir = Path(workdir)
        self.address, self.answer = address, answer
        self.acme_port, self.mgmt_port = acme_port, mgmt_port
        self.dns_port, self.dns_mgmt_port = dns_port, dns_mgmt_port
        self.directory = f"https://{address}:{acme_port}/dir"
        self.tls_cert = self.workdir / "acme-tls.pem"
        self.tls_key = self.workdir / "acme-tls.key"
        self.root = self.workdir / "pebble-root.pem"
        self.procs: list[subprocess.Popen] = []

    def _make_tls(self) -> None:
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", self.tls_key, "-out", self.tls_cert, "-days", "2", "-subj", "/CN=lab ACME server",
             "-addext", f"subjectAltName=IP:{self.address}", "-addext", "basicConstraints=critical,CA:TRUE"],
            what="openssl (pebble's TLS certificate)")

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            # A session of its own: the lab's pebble outlives `sitectl lab up` and its terminal.
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               env=host_env(env), start_new_session=True))

    @property
    def pid_file(self) -> Path:
        return self.workdir / "pids.json"

    def recorded(self) -> list[int]:
        """PIDs of a pebble and challtestsrv started earlier from this workdir and still running."""
        try:
            pids = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return []
        alive = []
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmdline.endswith((b"pebble", b"pebble-challtestsrv")):
                alive.append(pid)
        return alive if len(alive) == len(pids) else []

    def ensure(self, timeout: float = 30) -> Pebble:
        """Start unless one started earlier from this workdir runs (it then keeps its TLS certificate
        and root: the guests' trust stays valid across `sitectl lab up` runs)."""
        if self.recorded() and self.tls_cert.is_file():
            return self
        self.stop_recorded()
        return self.start(timeout)

    def stop_recorded(self) -> None:
        """Stop a pebble and challtestsrv recorded in this workdir (by PID); safe to call twice."""
        import signal

        for pid in self.recorded():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while self.recorded() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.recorded():
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 30) -> Pebble:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_tls()
        self._spawn("challtestsrv", [
            "pebble-challtestsrv", "-defaultIPv4", self.answer, "-defaultIPv6", "",
            "-dns01", f"{self.address}:{self.dns_port}", "-management", f"{self.address}:{self.dns_mgmt_port}",
            "-http01", "", "-https01", "", "-tlsalpn01", ""])
        config = self.workdir / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{self.address}:{self.acme_port}",
            "managementListenAddress": f"{self.address}:{self.mgmt_port}",
            "certificate": str(self.tls_cert), "privateKey": str(self.tls_key),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        # No validation delay, no rejected nonces: the lab tests the client, not its retries.
        self._spawn("pebble", ["pebble", "-config", str(config), "-dnsserver", f"{self.address}:{self.dns_port}"],
                    env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        context = ssl.create_default_context(cafile=str(self.tls_cert))
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    self.stop()
                    raise LabError(f"{proc.args[0]} exited: {self.logs()}")
            try:
                urllib.request.urlopen(self.directory, context=context, timeout=2).read()  # noqa: S310 - https
                roots = f"https://{self.address}:{self.mgmt_port}/roots/0"
                self.root.write_bytes(urllib.request.urlopen(roots, context=context, timeout=2).read())  # noqa: S310
                self.pid_file.write_text(json.dumps([proc.pid for proc in self.procs]))
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise LabError(f"pebble did not answer within {timeout}s: {self.logs()}") from None
                time.sleep(0.3)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        """Stop the processes this object started (by PID); safe to call twice."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
