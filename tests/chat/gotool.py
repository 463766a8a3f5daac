"""The example chat service's Go build, as the role runs it: GOPATH mode over Debian's packaged Go
libraries (/usr/share/gocode), modules off, no network (GOPROXY=off).
Used by the Go tests here and by the benchmark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sitectl import ROOT

APP = ROOT / "apps" / "chat"
# What the role's defaults install for the example service (salt/chat/defaults.yaml).
DEBIAN_PACKAGES = ("golang-go", "golang-github-gorilla-websocket-dev", "golang-github-lib-pq-dev",
                   "golang-github-rabbitmq-amqp091-go-dev", "golang-github-prometheus-client-golang-dev")


def go_env(cache: Path) -> dict[str, str]:
    return {"PATH": "/usr/lib/go/bin:/usr/bin:/bin", "HOME": str(cache), "GO111MODULE": "off",
            "GOPATH": "/usr/share/gocode", "GOCACHE": str(cache / "go-build"), "GOPROXY": "off",
            "GOFLAGS": "", "CGO_ENABLED": "0"}


def missing_packages() -> list[str]:
    out = []
    for package in DEBIAN_PACKAGES:
        cp = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
        if "ok installed" not in cp.stdout:
            out.append(package)
    return out


def go(cache: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    if not shutil.which("go", path="/usr/lib/go/bin:/usr/bin"):
        raise RuntimeError("go is not installed (make setup installs golang-go)")
    return subprocess.run(["go", *args], cwd=APP, env={**go_env(cache), **(env or {})}, capture_output=True,
                          text=True, check=False, timeout=timeout)


def build(cache: Path, output: Path, version: str = "test") -> Path:
    cp = go(cache, "build", "-trimpath", "-ldflags", f"-X main.version={version}", "-o", str(output), ".")
    if cp.returncode != 0:
        raise RuntimeError(f"go build failed:\n{cp.stderr}")
    return output
