"""Read the host's apt sources: which mirror the lab uses and which hosts guests may reach."""

from __future__ import annotations

import glob
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._util import LabError


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def _parse_deb822(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, val = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if not fields or "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=fields.get("signed-by"),
                )
            )
    return out


def _parse_oneline(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        if parts and parts[0].startswith("["):
            while parts and not parts[0].endswith("]"):
                parts.pop(0)
            parts.pop(0)
        if len(parts) >= 2:
            out.append(AptSource(uri=parts[0].rstrip("/"), suites=(parts[1],), components=tuple(parts[2:])))
    return out


def host_sources(root: str = "/") -> list[AptSource]:
    sources: list[AptSource] = []
    base = os.path.join(root, "etc/apt")
    one = os.path.join(base, "sources.list")
    if os.path.exists(one):
        with open(one, encoding="utf-8") as fh:
            sources += _parse_oneline(fh.read())
    for path in sorted(glob.glob(os.path.join(base, "sources.list.d/*.list"))):
        with open(path, encoding="utf-8") as fh:
            sources += _parse_oneline(fh.read())
    for path in sorted(glob.glob(os.path.join(base, "sources.list.d/*.sources"))):
        with open(path, encoding="utf-8") as fh:
            sources += _parse_deb822(fh.read())
    return sources


def debian_mirror(suite: str = "bookworm") -> str:
    """The URI of the host's main Debian archive for ``suite`` (used by debootstrap)."""
    sources = host_sources()
    for src in sources:
        if suite in src.suites and "main" in src.components and "security" not in src.uri:
            return src.uri
    for src in sources:
        if suite in src.suites:
            return src.uri
    raise LabError(f"no apt source for suite {suite!r} in the host's /etc/apt (found: {[s.uri for s in sources]})")


def guest_sources_text(suite: str = "bookworm") -> str:
    """A deb822 sources file for guests built from the host's sources for ``suite``*."""
    stanzas = []
    for src in host_sources():
        suites = [s for s in src.suites if s == suite or s.startswith(suite + "-")]
        if not suites:
            continue
        lines = [
            "Types: deb",
            f"URIs: {src.uri}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(src.components) or 'main'}",
        ]
        lines.append("Signed-By: " + (src.signed_by or "/usr/share/keyrings/debian-archive-keyring.gpg"))
        stanzas.append("\n".join(lines) + "\n")
    if not stanzas:
        raise LabError(f"no apt source for suite {suite!r} on the host")
    return "\n".join(stanzas)


def mirror_hosts(suite: str = "bookworm") -> list[str]:
    hosts = []
    for src in host_sources():
        if not any(s == suite or s.startswith(suite + "-") for s in src.suites):
            continue
        host = urlsplit(src.uri).hostname
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def resolve_ipv4(host: str, tries: int = 3) -> list[str]:
    """All IPv4 addresses of ``host`` (a few lookups, to catch round-robin answers)."""
    addrs: set[str] = set()
    last: Exception | None = None
    for _ in range(tries):
        try:
            for info in socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM):
                addrs.add(info[4][0])
        except OSError as exc:
            last = exc
    if not addrs:
        raise LabError(f"cannot resolve apt mirror host {host!r}: {last}")
    return sorted(addrs)


def mirror_ipv4s(suite: str = "bookworm") -> list[str]:
    out: set[str] = set()
    for host in mirror_hosts(suite):
        out.update(resolve_ipv4(host))
    return sorted(out)


def host_nameservers() -> list[str]:
    """IPv4 nameservers from the host's /etc/resolv.conf."""
    servers = []
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                    servers.append(parts[1])
    except OSError:
        pass
    return servers
