"""Monitoring in the whole-site lab: the monitoring guest's Prometheus scrapes every guest of the example
site, and an alert travels from a stopped PostgreSQL to Alertmanager and into the mail sink.

The lab is the session's (tests/lab/conftest.py ``site_lab``). Prometheus, Alertmanager and the blackbox
exporter converge for real there; Grafana, Loki and the log shipper are rendered only (no build reachable
offline) and are not checked here. The SMTP sink (aiosmtpd) runs on the lab host's bridge address, where the
lab overlay points Alertmanager (pillar/overlays/lab.sls).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from sitectl import site
from tests.lab.infra import guest_host

pytestmark = pytest.mark.lab

SINK_PORT = 2525
# Bounds: a scrape (10 s) + `for: 1m` + an evaluation (10 s) + Alertmanager's group_wait (10 s), with slack.
ALERT_BOUND = 180
MAIL_BOUND = 60
RESOLVE_BOUND = 120


def _address(site_lab, name: str) -> str:
    return site_lab.lab.pillar["site"]["guests"][name]["address"].split("/")[0]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - lab addresses only
        return json.loads(resp.read())


def _wait(what: str, probe, bound: float, every: float = 3):
    deadline = time.monotonic() + bound
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound} s")
        time.sleep(every)


@pytest.fixture(scope="module")
def monitoring(site_lab):
    ip = _address(site_lab, "monitoring")
    return {"prometheus": f"http://{ip}:9090", "alertmanager": f"http://{ip}:9093"}


@pytest.fixture(scope="module")
def sink(site_lab):
    """An SMTP server on the lab host's bridge address that keeps every message it receives."""
    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    handler = Keep()
    controller = Controller(handler, hostname=site_lab.lab.pillar["site"]["network"]["gateway"], port=SINK_PORT)
    controller.start()
    yield handler
    controller.stop()


def test_prometheus_scrapes_every_declared_target_and_no_other(site_lab, monitoring):
    declared = site.platform_pillar(site_lab.lab.pillar, "monitoring")["platform"]["monitoring"]["targets"]
    want = {(t["job"], t["instance"], t["labels"]["guest"]): t["labels"] for t in declared}
    assert want, "the example site declares targets"

    def all_up():
        active = _get(monitoring["prometheus"] + "/api/v1/targets?state=active")["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"], t["labels"]["guest"]): t for t in active}
        return seen if set(seen) == set(want) and all(t["health"] == "up" for t in seen.values()) else None

    try:
        seen = _wait("every declared target up", all_up, 120)
    except AssertionError:
        active = _get(monitoring["prometheus"] + "/api/v1/targets?state=active")["data"]["activeTargets"]
        report = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"])
                        for t in active)
        raise AssertionError(f"declared {sorted(want)}; Prometheus has {report}") from None
    for key, labels in want.items():
        assert {k: seen[key]["labels"][k] for k in labels} == labels, key
    up = _get(monitoring["prometheus"] + "/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))["data"]["result"]
    assert len(up) == len(want) and {r["value"][1] for r in up} == {"1"}, up


def test_every_guest_of_the_site_is_scraped(site_lab, monitoring):
    up = _get(monitoring["prometheus"] + "/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="node"}'}))
    assert {r["metric"]["guest"] for r in up["data"]["result"]} == set(site_lab.lab.pillar["site"]["guests"])


def test_the_healthy_site_raises_no_alert_but_for_routes_to_what_the_lab_does_not_converge(site_lab, monitoring):
    """Every rule on the lab's real series: silent, pending or firing alike, except RouteDown for the routes
    whose guest serves them from what the lab does not converge (a role or a part of it switched off: the
    mailcow stack, Nextcloud's server and Collabora, the k3s apps). The chat route is probed at its
    health path and must answer."""
    from sitectl import roles as roles_of

    pillar = site_lab.lab.pillar
    partly = roles_of.parts_not_converged(pillar)
    idle = {name for name, g in pillar["site"]["guests"].items()
            if [r for r in g["roles"] if pillar["roles"][r].get("converge", True) is False or r in partly]}
    assert "microservices" not in idle and "reverse-proxy" not in idle
    query = urllib.parse.urlencode({"query": "ALERTS"})
    alerts = [r["metric"] for r in _get(monitoring["prometheus"] + "/api/v1/query?" + query)["data"]["result"]]
    unexpected = [a for a in alerts if not (a["alertname"] == "RouteDown" and a["guest"] in idle)]
    assert not unexpected, unexpected


def _alerts(monitoring, name: str, active: bool = True) -> list:
    query = urllib.parse.urlencode({"filter": f'alertname="{name}"', "active": str(active).lower()})
    return _get(monitoring["alertmanager"] + "/api/v2/alerts?" + query)


def test_a_stopped_postgresql_alerts_by_mail_and_resolves_when_it_starts(site_lab, monitoring, sink):
    pg = guest_host("postgresql", site_lab.lab.lab_dir)
    assert not _alerts(monitoring, "PostgresqlDown"), "PostgreSQL is up: no alert before the test"
    t0 = time.monotonic()
    pg.check_output("systemctl stop postgresql")
    try:
        alert = _wait("PostgresqlDown in Alertmanager", lambda: _alerts(monitoring, "PostgresqlDown"), ALERT_BOUND)
        reached_alertmanager = round(time.monotonic() - t0)
        assert alert[0]["labels"]["guest"] == "postgresql" and alert[0]["labels"]["severity"] == "critical"
        mail = _wait("the alert mail in the sink",
                     lambda: [m for m in sink.messages if "PostgresqlDown" in m and "RESOLVED" not in m], MAIL_BOUND)
        reached_sink = round(time.monotonic() - t0)
        assert "To: hostmaster@your-domain.com" in mail[0]
    finally:
        pg.check_output("systemctl start postgresql")
    t1 = time.monotonic()
    _wait("the resolved mail in the sink",
          lambda: [m for m in sink.messages if "RESOLVED" in m and "PostgresqlDown" in m], RESOLVE_BOUND)
    resolved = round(time.monotonic() - t1)
    assert not _alerts(monitoring, "PostgresqlDown")
    print(f"PostgresqlDown: Alertmanager after {reached_alertmanager} s, mail after {reached_sink} s; "
          f"resolved mail {resolved} s after the start")


def test_resource_figures_of_the_monitoring_guest(site_lab, monitoring):
    """The figures docs/monitoring.md sizes retention with: series, samples per second, Prometheus's memory
    and its data folder, after the lab's scraping so far (10 s scrapes). Prometheus must fit the guest."""
    def scalar(expr: str) -> float:
        result = _get(monitoring["prometheus"] + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return float(result["data"]["result"][0]["value"][1])

    host = guest_host("monitoring", site_lab.lab.lab_dir)
    figures = {
        "head_series": scalar("prometheus_tsdb_head_series"),
        "samples_per_second": round(scalar("rate(prometheus_tsdb_head_samples_appended_total[2m])"), 1),
        "prometheus_rss_mib": round(scalar('process_resident_memory_bytes{job="prometheus"}') / 2**20, 1),
        "alertmanager_rss_mib": round(scalar('process_resident_memory_bytes{job="alertmanager"}') / 2**20, 1),
        "data_dir_kib": int(host.check_output("du -sk /var/lib/prometheus/metrics2").split()[0]),
        "uptime_seconds": round(scalar('time() - process_start_time_seconds{job="prometheus"}')),
    }
    (site_lab.state / "monitoring-figures.json").write_text(json.dumps(figures, indent=2))
    print(f"monitoring figures: {figures}")
    memory_mib = site_lab.lab.pillar["site"]["guests"]["monitoring"]["memory"]
    assert figures["prometheus_rss_mib"] < memory_mib / 4, figures
