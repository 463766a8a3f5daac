"""The edge lab's parts (the fixture is in conftest.py): a reverse-proxy guest running the
reverse_proxy role masterless, two upstream guests, and a real ACME server (Debian's pebble) on
the host.

Everything here is the module's own: lab dir /var/lib/sitectl-lab-edge, bridge sitelabe0, nft
table sitectl_lab_edge, subnet 10.77.95.0/24; pebble and its DNS (pebble-challtestsrv) listen on
the bridge's address only and are stopped by PID. Only the template cache is shared.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import yaml

from sitectl import ROOT, site
from sitectl.lab.pebble import Pebble

LAB_DIR = "/var/lib/sitectl-lab-edge"
BRIDGE = "sitelabe0"
TABLE = "sitectl_lab_edge"
GATEWAY = "10.77.95.1"
DOMAIN = "your-domain.com"
PROXY = "reverse-proxy"
PROXY_IP = "10.77.95.100"
# The site's upstream guests, each answering on its route's port with an echo of what it got.
UPSTREAMS = {"nextcloud": ("10.77.95.102", 80), "mailcow": ("10.77.95.104", 8080)}
SALT_CONFIG_DIR = "/etc/salt-edge"  # the masterless minion of the proxy guest (not /etc/salt)
EVENT_LOG = "/var/log/edge-salt-call.log"

ECHO_SERVER = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
name = socket.gethostname()
class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"guest": name, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
"""

# Records the hook's salt-call arguments, then runs the real salt-call (which, masterless here,
# finds no master and gives up after the hook's timeout).
SALT_CALL_RECORDER = f"""#!/bin/sh
printf '%s\\n' "$*" >> {EVENT_LOG}
exec /usr/bin/salt-call "$@"
"""


def edge_pillar(ca_bundle: str, routes_override: dict | None = None) -> dict:
    """The pillar the master would compile for the proxy guest: site, role catalog, its view."""
    roles = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    guests = {
        PROXY: {"kind": "lxc", "vmid": 100, "cores": 1, "memory": 512, "disk": 4,
                "address": f"{PROXY_IP}/24", "roles": ["reverse_proxy"]},
        "nextcloud": {"kind": "lxc", "vmid": 102, "cores": 1, "memory": 512, "disk": 4,
                      "address": f"{UPSTREAMS['nextcloud'][0]}/24", "roles": ["nextcloud"]},
        "mailcow": {"kind": "lxc", "vmid": 104, "cores": 1, "memory": 512, "disk": 4,
                    "address": f"{UPSTREAMS['mailcow'][0]}/24", "roles": ["mailcow"]},
    }
    routes = {
        "nextcloud": {"guest": "nextcloud", "port": UPSTREAMS["nextcloud"][1], "max_body": "16G", "timeout": 3600},
        "mail": {"guest": "mailcow", "port": UPSTREAMS["mailcow"][1], "max_body": "64M", "websocket": True},
    }
    site_data = {
        "name": "edge", "domain": DOMAIN,
        "network": {"cidr": "10.77.95.0/24", "gateway": GATEWAY, "nameservers": [GATEWAY],
                    "admin_sources": [f"{GATEWAY}/32"]},
        "salt": {"master": GATEWAY},
        "acme": {"directory": f"https://{GATEWAY}:14000/dir", "email": f"hostmaster@{DOMAIN}",
                 "ca_bundle": ca_bundle},
        "guests": guests, "routes": routes,
    }
    proxy_pillar = {"renewal": {"event_timeout": 5, "salt_call": "/usr/local/bin/edge-salt-call",
                                "expiry_warn_days": 36500}}
    pillar = {"site": site_data, "roles": roles, "reverse_proxy": proxy_pillar}
    site.check(pillar)  # what the master's ext_pillar would refuse never reaches the guest
    if routes_override:  # past validation on purpose: what nginx itself must refuse
        for name, change in routes_override.items():
            site_data["routes"][name].update(change)
    pillar.update(site.platform_pillar(pillar, PROXY))
    return pillar


class EdgeLab:
    def __init__(self, host, pebble: Pebble):
        self.host = host
        self.pebble = pebble

    def sh(self, guest: str, script: str, check: bool = True, timeout: float = 300, env: dict | None = None):
        return self.host.attach(guest, ["sh", "-c", script], lab_dir=LAB_DIR, check=check, timeout=timeout, env=env)

    def write_pillar(self, pillar: dict) -> None:
        self.host.write_guest_file(PROXY, "/srv/pillar/top.sls", b"base:\n  '*':\n    - edge\n", lab_dir=LAB_DIR)
        self.host.write_guest_file(PROXY, "/srv/pillar/edge.sls", ("#!json\n" + json.dumps(pillar)).encode(),
                                   mode=0o600, lab_dir=LAB_DIR)

    def apply(self) -> SimpleNamespace:
        """state.apply reverse_proxy masterless in the proxy guest; its states, failures and changes."""
        t0 = time.monotonic()
        cp = self.host.attach(PROXY, ["salt-call", "-c", SALT_CONFIG_DIR, "--out=json", "--retcode-passthrough",
                                      "state.apply", "reverse_proxy"], lab_dir=LAB_DIR, check=False, timeout=900)
        seconds = round(time.monotonic() - t0, 1)
        try:
            states = json.loads(cp.stdout)["local"]
        except (ValueError, KeyError):
            raise AssertionError(f"salt-call gave no state result (rc {cp.returncode}):\n{cp.stdout}\n{cp.stderr}") \
                from None
        if not isinstance(states, dict):
            raise AssertionError(f"state.apply did not run: {states}")
        failed = {k: v["comment"] for k, v in states.items() if v["result"] is not True}
        changed = {k.split("_|-")[1]: v["changes"] for k, v in states.items() if v["changes"]}
        return SimpleNamespace(rc=cp.returncode, states=states, failed=failed, changed=changed, seconds=seconds)


