"""The lab's host network: one bridge, IPv4 forwarding, one nft table of our own.

Guests may reach: each other (same bridge), the host itself, the apt mirror(s) named in the
host's apt sources on TCP 80/443, and the resolver(s) of the host's /etc/resolv.conf on port
53. Every other forward from or to the bridge is dropped, so nothing else leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os

from . import aptsources
from ._util import LabError, run

DEFAULT_BRIDGE = "sitelab0"
DEFAULT_GATEWAY_CIDR = "10.77.0.1/24"
DEFAULT_TABLE = "sitectl_lab"
INOTIFY_INSTANCES = 1024
STATE_DIR = "/run/sitectl-lab"

# nft keywords that must not be used as chain names (learned the hard way: fwd, post).
_RESERVED = {
    "fwd",
    "post",
    "forward",
    "input",
    "output",
    "prerouting",
    "postrouting",
    "filter",
    "nat",
    "route",
    "table",
    "chain",
}
FORWARD_CHAIN = "lab_forward"
NAT_CHAIN = "lab_nat"
assert FORWARD_CHAIN not in _RESERVED and NAT_CHAIN not in _RESERVED


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _table_exists(table: str) -> bool:
    return run(["nft", "list", "table", "inet", table], check=False).returncode == 0


def _set_elems(addrs: list[str]) -> str:
    return f"elements = {{ {', '.join(addrs)} }}" if addrs else ""


def render_ruleset(
    bridge: str, subnet: str, mirror_ips: list[str], dns_ips: list[str], table: str = DEFAULT_TABLE
) -> str:
    """The nft script that (re)creates the lab's table atomically."""
    br = json.dumps(bridge)  # a quoted nft string
    return f"""\
table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    set mirror4 {{
        type ipv4_addr
        {_set_elems(mirror_ips)}
    }}
    set dns4 {{
        type ipv4_addr
        {_set_elems(dns_ips)}
    }}
    chain {FORWARD_CHAIN} {{
        type filter hook forward priority filter; policy drop;
        # forwarded traffic that does not touch the lab is judged by other tables only
        iifname != {br} oifname != {br} accept
        tcp flags syn tcp option maxseg size set rt mtu
        ct state established,related accept
        ct state invalid drop
        iifname {br} oifname {br} accept
        iifname {br} ip saddr {subnet} ip daddr @mirror4 tcp dport {{ 80, 443 }} accept
        iifname {br} ip saddr {subnet} ip daddr @dns4 udp dport 53 accept
        iifname {br} ip saddr {subnet} ip daddr @dns4 tcp dport 53 accept
        counter drop
    }}
    chain {NAT_CHAIN} {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != {br} ip daddr @mirror4 masquerade
        ip saddr {subnet} oifname != {br} ip daddr @dns4 masquerade
    }}
}}
"""


def _bridge_addrs(bridge: str) -> list[str]:
    out = run(["ip", "-j", "-4", "addr", "show", "dev", bridge]).stdout
    addrs = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            addrs.append(f"{a['local']}/{a['prefixlen']}")
    return addrs


def network_up(
    bridge: str = DEFAULT_BRIDGE, gateway_cidr: str = DEFAULT_GATEWAY_CIDR, table: str = DEFAULT_TABLE
) -> dict:
    """Create/refresh the bridge, forwarding and the nft table; return what was set up."""
    gw = ipaddress.ip_interface(gateway_cidr)
    if gw.version != 4:
        raise LabError(f"gateway_cidr must be IPv4, got {gateway_cidr!r}")
    subnet = str(gw.network)
    mirror_ips = aptsources.mirror_ipv4s()
    dns_ips = aptsources.host_nameservers()
    for ip in dns_ips:
        if ipaddress.ip_address(ip).is_loopback:
            raise LabError(f"the host's resolver {ip} is a loopback address; guests cannot use it")

    if not _link_exists(bridge):
        run(["ip", "link", "add", "name", bridge, "type", "bridge"], what="create bridge")
    current = _bridge_addrs(bridge)
    if current != [str(gw)]:
        run(["ip", "addr", "flush", "dev", bridge], what="flush bridge addresses")
        run(["ip", "addr", "add", str(gw), "dev", bridge], what="set bridge address")
    run(["ip", "link", "set", bridge, "up"], what="bridge up")

    os.makedirs(STATE_DIR, exist_ok=True)
    # Every guest's systemd and services take inotify instances of root (privileged guests share
    # the host's uid 0); Debian's default of 128 is exhausted by about a dozen guests.
    limit = "/proc/sys/fs/inotify/max_user_instances"
    with open(limit, encoding="ascii") as fh:
        if int(fh.read()) < INOTIFY_INSTANCES:
            with open(limit, "w", encoding="ascii") as out:
                out.write(str(INOTIFY_INSTANCES))
    fwd = "/proc/sys/net/ipv4/ip_forward"
    prev_file = os.path.join(STATE_DIR, "ip_forward.prev")
    with open(fwd, encoding="ascii") as fh:
        prev = fh.read().strip()
    if not os.path.exists(prev_file):
        with open(prev_file, "w", encoding="ascii") as fh:
            fh.write(prev + "\n")
    if prev != "1":
        with open(fwd, "w", encoding="ascii") as fh:
            fh.write("1\n")

    script = render_ruleset(bridge, subnet, mirror_ips, dns_ips, table)
    run(["nft", "-f", "-"], input=script, what=f"nft load table inet {table}")
    return {
        "bridge": bridge,
        "gateway": str(gw.ip),
        "subnet": subnet,
        "table": table,
        "mirror_ips": mirror_ips,
        "dns_ips": dns_ips,
    }


def network_down(bridge: str = DEFAULT_BRIDGE, table: str = DEFAULT_TABLE) -> None:
    """Remove the nft table and the bridge; restore ip_forward. Safe to call twice."""
    if _table_exists(table):
        run(["nft", "delete", "table", "inet", table], what=f"nft delete table inet {table}")
    if _link_exists(bridge):
        run(["ip", "link", "del", bridge], what="delete bridge")
    prev_file = os.path.join(STATE_DIR, "ip_forward.prev")
    others = [
        line.split()[-1]
        for line in run(["nft", "list", "tables"]).stdout.splitlines()
        if line.split()[-1:] and line.split()[-1].startswith("sitectl_lab")
    ]
    if os.path.exists(prev_file) and not others:  # the last lab network restores it
        with open(prev_file, encoding="ascii") as fh:
            prev = fh.read().strip()
        if prev in ("0", "1"):
            with open("/proc/sys/net/ipv4/ip_forward", "w", encoding="ascii") as fh:
                fh.write(prev + "\n")
        os.unlink(prev_file)


def network_state(bridge: str = DEFAULT_BRIDGE, table: str = DEFAULT_TABLE) -> dict:
    return {
        "bridge": _link_exists(bridge),
        "table": _table_exists(table),
        "addresses": _bridge_addrs(bridge) if _link_exists(bridge) else [],
    }
