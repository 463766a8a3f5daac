"""The lab's backup repository: restic's REST protocol served by Debian's rclone (`rclone serve
restic`) on the lab bridge's address, its data in a folder of the host: off every guest, as a
repository must be. Production runs restic's rest-server or an sftp account on a machine of its own
(docs/backup.md); restic speaks the same protocol to both.

    repo = BackupRepository(workdir, "10.77.95.1", 8008).ensure()
    repo.url                      # rest:http://10.77.95.1:8008
    repo.data / "<guest>-<job>"   # a repository's files (to damage one in a test)
    repo.stop()                   # only the process it started, by PID
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ._util import LabError, host_env


class BackupRepository:
    def __init__(self, workdir: Path, address: str, port: int = 8008):
        self.workdir = Path(workdir)
        self.address, self.port = address, port
        self.url = f"rest:http://{address}:{port}"
        self.data = self.workdir / "data"
        self.pid_file = self.workdir / "pid.json"
        self.proc: subprocess.Popen | None = None

    def recorded(self) -> int | None:
        """The PID of an rclone started earlier from this workdir and still serving it."""
        try:
            pid = json.loads(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if cmdline[0].endswith(b"rclone") and str(self.data).encode() in cmdline else None

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def ensure(self, timeout: float = 20) -> BackupRepository:
        return self if self.recorded() and self.answers() else self.start(timeout)

    def start(self, timeout: float = 20) -> BackupRepository:
        self.stop_recorded()
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.workdir / "rclone.log").open("ab") as log:
            # A session of its own: the lab's repository outlives `sitectl lab up` and its terminal.
            self.proc = subprocess.Popen(
                ["rclone", "serve", "restic", "--addr", f"{self.address}:{self.port}", str(self.data)],
                stdout=log, stderr=subprocess.STDOUT, env=host_env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError(f"rclone serve restic did not answer on {self.address}:{self.port}: "
                               f"{(self.workdir / 'rclone.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        self.pid_file.write_text(json.dumps(self.proc.pid))
        return self

    def stop(self) -> None:
        """Stop the process this object started (by PID); safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.pid_file.unlink(missing_ok=True)

    def stop_recorded(self) -> None:
        """Stop an rclone recorded in this workdir by an earlier run (by PID); safe to call twice."""
        pid = self.recorded()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.recorded() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
