"""testinfra through lab guests: commands run with lxc-attach, as root inside the guest."""

from __future__ import annotations

import subprocess

import testinfra.host
from testinfra.backend.base import BaseBackend


class LxcAttachBackend(BaseBackend):
    NAME = "lxcattach"

    def __init__(self, name: str, lab_dir: str, **kwargs):
        self.lab_dir = lab_dir
        super().__init__(name, **kwargs)

    def get_pytest_id(self) -> str:
        return f"lab:{self.hostname}"

    def run(self, command: str, *args: str, **kwargs):
        cmd = self.get_command(command, *args)
        argv = ["lxc-attach", "-P", self.lab_dir, "-n", self.hostname, "--clear-env", "--",
                "env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "/bin/sh", "-c", cmd]
        out = subprocess.run(argv, capture_output=True, check=False, timeout=120)
        return self.result(out.returncode, self.encode(cmd), out.stdout, out.stderr)


def guest_host(name: str, lab_dir: str) -> testinfra.host.Host:
    return testinfra.host.Host(LxcAttachBackend(name, lab_dir))
