"""The monitoring role converged in a real LXC guest (the scratch lab) against a real OpenBao: Prometheus,
Alertmanager and the blackbox exporter from Debian, configured from the example site (moved to the scratch
subnet), checked through their own HTTP APIs. Grafana, Loki and the shipper are rendered only here, as in
the whole-site lab (no build reachable offline)."""

from __future__ import annotations

import datetime
import json
import time
import urllib.request

import pytest

from sitectl import site
from tests.scratchlab import GATEWAY, example_site, guest_ip, guest_pillar

GUEST = "monitoring"
SITE = example_site()
IP = guest_ip(SITE, GUEST)
ROLE_POLICY = """
path "secret/data/roles/monitoring/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/roles/monitoring/*" { capabilities = ["read", "list"] }
"""
SINK_PORT = 2525
OFF = {"converge": False, "reason": "not in the scratch lab"}
PILLAR = {"monitoring": {"grafana": OFF, "loki": OFF, "alloy": OFF,
                         "prometheus": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                         "alertmanager": {"require_tls": False, "smarthost": f"{GATEWAY}:{SINK_PORT}",
                                          "group_wait": "2s", "group_interval": "5s"}},
          # as in the lab (pillar/overlays/lab.sls): no k3s binary, so no kubelet to scrape and no token
          # of its scraper in Vault
          "k3s": {"install": OFF}}

pytestmark = pytest.mark.lab


def api(port: int, path: str, post=None) -> dict | list:
    request = urllib.request.Request(f"http://{IP}:{port}{path}", method="POST" if post is not None else "GET",
                                     data=json.dumps(post).encode() if post is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - lab address
        body = resp.read()
        return json.loads(body) if body else {}


@pytest.fixture(scope="module")
def sink():
    """An SMTP server on the scratch lab's gateway that keeps what it receives."""
    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    handler = Keep()
    controller = Controller(handler, hostname=GATEWAY, port=SINK_PORT)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture(scope="module")
def mon_lab(scratch_lab):
    lab = scratch_lab
    lab.start_guests(SITE, GUEST)
    bao = lab.start_vault()
    bao.policy("salt_role_monitoring", ROLE_POLICY)
    lab.push_salt(GUEST, guest_pillar(SITE, GUEST, PILLAR), vault_token=bao.token(["salt_role_monitoring"]))
    return lab


@pytest.fixture(scope="module")
def converged(mon_lab):
    return mon_lab.apply(GUEST, "monitoring"), mon_lab.apply(GUEST, "monitoring")


def _journal(lab) -> str:
    units = "-u prometheus -u prometheus-alertmanager -u prometheus-blackbox-exporter"
    return lab.sh(GUEST, f"journalctl --no-pager -n 60 {units} | grep -v level=info", check=False).stdout


def test_converges_and_the_second_apply_changes_nothing(mon_lab, converged):
    first, second = converged
    assert not first.failed, (first.failed, _journal(mon_lab))
    assert not second.failed and second.changed == {}, (second.changed, _journal(mon_lab))


def test_prometheus_scrapes_exactly_the_targets_derived_from_the_site(converged):
    pillar = {"site": SITE, "roles": guest_pillar(SITE, GUEST, PILLAR)["roles"], **PILLAR}
    targets = site.platform_pillar(pillar, GUEST)["platform"]["monitoring"]["targets"]
    declared = {(t["job"], t["instance"], t["labels"]["guest"]) for t in targets}
    deadline = time.monotonic() + 60
    while True:
        active = api(9090, "/api/v1/targets?state=active")["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"], t["labels"]["guest"]) for t in active}
        if seen == declared or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert seen == declared
    for target in active:
        assert {"guest", "role", "vmid"} <= set(target["labels"]), target["labels"]
    # Its own services answer; the other guests do not exist in the scratch lab, and the base state
    # (node-exporter) is not applied here.
    own = {t["labels"]["job"]: t["health"] for t in active
           if t["labels"]["guest"] == GUEST and t["labels"]["job"] != "node"}
    deadline = time.monotonic() + 60
    while set(own.values()) != {"up"} and time.monotonic() < deadline:
        time.sleep(3)
        active = api(9090, "/api/v1/targets?state=active")["data"]["activeTargets"]
        own = {t["labels"]["job"]: t["health"] for t in active
               if t["labels"]["guest"] == GUEST and t["labels"]["job"] != "node"}
    assert own == {"prometheus": "up", "alertmanager": "up", "blackbox": "up"}


def test_the_rules_are_loaded_and_alertmanager_runs_the_generated_routes(converged):
    groups = api(9090, "/api/v1/rules")["data"]["groups"]
    assert {g["name"] for g in groups} == {"guests", "edge", "services", "backups"}
    status = api(9093, "/api/v2/status")
    assert "GuestDown" in status["config"]["original"] and "mail-critical" in status["config"]["original"]


def test_a_broken_config_never_replaces_the_working_one(mon_lab, converged):
    """The role's own check: the same check_cmd on a candidate promtool refuses leaves the live file."""
    live = "/etc/prometheus/prometheus.yml"
    before = mon_lab.sh(GUEST, f"sha256sum {live}").stdout
    mon_lab.write_file(GUEST, "/srv/salt/broken_prometheus.sls", (
        "broken-prometheus-config:\n  file.managed:\n"
        f"    - name: {live}\n"
        "    - contents: 'scrape_configs: [{job_name: x, scrape_interval: nonsense}]'\n"
        "    - check_cmd: promtool check config --syntax-only\n"))
    broken = mon_lab.apply(GUEST, "broken_prometheus")
    assert broken.failed
    assert mon_lab.sh(GUEST, f"sha256sum {live}").stdout == before


def _wait(probe, bound: float):
    deadline = time.monotonic() + bound
    while not (value := probe()) and time.monotonic() < deadline:
        time.sleep(1)
    return value


def test_alertmanager_mails_by_severity_inhibits_and_resolves(converged, sink):
    """Alerts as Prometheus sends them, straight to Alertmanager's API: a down guest is mailed (through the
    sink where the role's smarthost points), silences the other alerts of that guest, and its end is mailed
    as resolved."""
    now = datetime.datetime.now(datetime.timezone.utc)
    labels = {"guest": "nextcloud", "role": "nextcloud", "vmid": "102", "job": "node", "instance": "a:9100"}
    down = {"labels": {**labels, "alertname": "GuestDown", "severity": "critical"},
            "startsAt": now.isoformat()}
    disk = {"labels": {**labels, "alertname": "DiskAlmostFull", "severity": "critical", "mountpoint": "/"},
            "startsAt": now.isoformat()}
    api(9093, "/api/v2/alerts", post=[down, disk])
    mails = _wait(lambda: [m for m in sink.messages if "GuestDown" in m and "RESOLVED" not in m], 60)
    assert mails and "To: hostmaster@your-domain.com" in mails[0]
    alerts = {a["labels"]["alertname"]: a for a in api(9093, "/api/v2/alerts")}
    assert alerts["DiskAlmostFull"]["status"]["inhibitedBy"], "a down guest silences its other alerts"
    assert not [m for m in sink.messages if "DiskAlmostFull" in m]
    down["endsAt"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    api(9093, "/api/v2/alerts", post=[down])
    assert _wait(lambda: [m for m in sink.messages if "RESOLVED" in m and "GuestDown" in m], 60)
