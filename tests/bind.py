"""A real BIND 9 (Debian's bind9) for the tests: one primary zone accepting RFC 2136 updates signed
with one TSIG key, on loopback or on a lab bridge's gateway, started and stopped by the test that
needs it (by its pid)."""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

NAMED = "/usr/sbin/named"


class BindServer:
    """``named`` in the foreground on ``host``:``port`` serving ``zone`` (updatable with the key
    ``key_name``, HMAC-SHA256, a secret made now); no recursion, no control channel."""

    def __init__(self, workdir: Path, zone: str, host: str = "127.0.0.1", port: int | None = None,
                 key_name: str = "mailcow-update", hosts: dict[str, str] | None = None):
        from tests.openbao import free_port

        self.workdir = workdir
        self.zone = zone.rstrip(".")
        self.host = host
        self.port = port or free_port(host)
        self.key_name = key_name
        # Address records the zone already has (the mail host's is the reverse proxy route's record,
        # published with the routes, not by the mail domain's records; BIND refuses an MX to a name
        # without one).
        self.hosts = hosts or {}
        self.key_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "named.log"

    def _config(self) -> str:
        return f"""
options {{
    directory "{self.workdir}";
    pid-file "{self.workdir}/named.pid";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
}};
controls {{ }};
key "{self.key_name}" {{ algorithm hmac-sha256; secret "{self.key_secret}"; }};
zone "{self.zone}" {{
    type primary;
    file "{self.workdir}/{self.zone}.zone";
    allow-update {{ key "{self.key_name}"; }};
}};
"""

    def start(self) -> BindServer:
        (self.workdir / f"{self.zone}.zone").write_text(
            f"$TTL 300\n@ IN SOA ns1.{self.zone}. hostmaster.{self.zone}. 1 3600 600 86400 300\n"
            f"@ IN NS ns1.{self.zone}.\nns1 IN A {self.host}\n"
            + "".join(f"{name} IN A {address}\n" for name, address in sorted(self.hosts.items())))
        conf = self.workdir / "named.conf"
        conf.write_text(self._config())
        check = subprocess.run(["named-checkconf", str(conf)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([NAMED, "-g", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"named exited: {self.log.read_text()[-2000:]}")
            try:
                if self.query(self.zone, "SOA"):
                    return self
            except (OSError, dns.exception.DNSException):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"named did not answer on {self.host}:{self.port}: {self.log.read_text()[-2000:]}")

    def query(self, name: str, rdtype: str) -> list[str]:
        """The rdata texts ``named`` answers for ``name`` and ``rdtype`` (a client's view)."""
        reply = dns.query.udp(dns.message.make_query(name, rdtype), self.host, port=self.port, timeout=5)
        want = dns.rdatatype.from_text(rdtype)
        return sorted(rdata.to_text() for rrset in reply.answer if rrset.rdtype == want for rdata in rrset)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
