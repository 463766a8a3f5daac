"""The monitoring role rendered for the example site (no daemon): the targets derived from the site, the
files of the components that have no build reachable here (Grafana, Loki, the log shipper) checked
statically (L1), and the dashboards regenerated from sitectl/dashboards.py and their queries checked
with promtool. The configs Debian's tools check (Prometheus, Alertmanager, blackbox) are run through
their check_cmd by tests/render/test_discovery.py."""

from __future__ import annotations

import configparser
import copy
import json
import shutil
import subprocess

import pytest
import yaml

from sitectl import ROOT, dashboards, monitoring, render, site
from tests.conftest import load_site, state_args

pytestmark = pytest.mark.render

CATALOG = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]


def plan(site_data: dict, catalog: dict | None = None, extra: dict | None = None) -> dict:
    pillar = {"site": site_data, "roles": catalog or CATALOG, **(extra or {})}
    site.check(pillar)
    return monitoring.plan(pillar, site.master_address(site_data))


def keys(targets: list[dict]) -> set[tuple]:
    return {(t["job"], t["address"], t.get("module"), tuple(sorted(t["labels"].items()))) for t in targets}


def test_every_guest_and_exporter_of_the_example_site_is_a_target_with_its_labels():
    data = load_site()
    targets = plan(data)["targets"]
    node = {t["labels"]["guest"]: t for t in targets if t["job"] == "node"}
    assert set(node) == set(data["guests"])
    assert node["control"]["labels"] == {"guest": "control", "role": "salt_master,deploy_runner", "vmid": "110"}
    assert node["postgresql"]["address"] == "10.10.10.103:9100"
    by_job = {t["job"]: t for t in targets}
    assert by_job["postgresql"]["address"] == "10.10.10.103:9187"
    assert by_job["rabbitmq"]["address"] == "10.10.10.105:15692"
    assert by_job["nginx"]["address"] == "10.10.10.100:9113"
    assert by_job["vault"]["address"] == "10.10.10.111:8210"
    assert by_job["salt_master"]["address"] == "10.10.10.110:4506"
    routes = {t["labels"]["route"]: t for t in targets if t["job"] == "routes"}
    app_routes = {app["route"] for app in data.get("apps", {}).values() if app.get("route")}
    assert set(routes) == set(data["routes"]) | app_routes, "the site's routes and its apps'"
    assert routes["nextcloud"]["address"] == "https://10.10.10.100/"
    assert routes["nextcloud"]["labels"]["fqdn"] == "nextcloud.your-domain.com"
    assert routes["mail"]["labels"]["guest"] == "mailcow" and routes["mail"]["module"] == "route_mail"
    for target in targets:
        assert {"guest", "role", "vmid"} <= set(target["labels"]), target


def test_a_new_guest_or_route_adds_its_targets_and_nothing_else_changes():
    data = load_site()
    before = keys(plan(data)["targets"])
    grown = copy.deepcopy(data)
    grown["guests"]["cache"] = {"kind": "lxc", "vmid": 130, "cores": 1, "memory": 1024, "disk": 8,
                                "address": "10.10.10.130/24", "roles": ["rabbitmq"]}
    grown["routes"]["wiki"] = {"guest": "nextcloud", "port": 8081}
    after = keys(plan(grown)["targets"])
    assert before <= after
    added = {(job, address) for job, address, *_ in after - before}
    assert added == {("node", "10.10.10.130:9100"), ("rabbitmq", "10.10.10.130:15692"),
                     ("routes", "https://10.10.10.100/")}


def test_roles_and_parts_that_do_not_converge_have_no_target():
    catalog = copy.deepcopy(CATALOG)
    catalog["gitlab_runner"].update(converge=False, reason="test")
    targets = plan(load_site(), catalog)["targets"]
    assert not [t for t in targets if t["job"] == "gitlab_runner"]
    assert [t for t in targets if t["labels"]["guest"] == "git-lab-docker-runner" and t["job"] == "node"]
    catalog["monitoring"].update(converge=False, reason="test")
    assert not [t for t in plan(load_site(), catalog)["targets"] if t["labels"].get("role") == "monitoring"]
    # a part switched off (the lab's GitLab Runner): the role's other targets stay, its exporter goes
    off = {"gitlab_runner": {"install": {"converge": False, "reason": "test"}}}
    targets = plan(load_site(), CATALOG, extra=off)["targets"]
    assert not [t for t in targets if t["job"] == "gitlab_runner"]
    assert [t for t in plan(load_site(), CATALOG)["targets"] if t["job"] == "gitlab_runner"], "on by default"


# --- rendered files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_high(example_config):
    high = render.caller(example_config, "monitoring").cmd("state.show_sls", "monitoring")
    assert isinstance(high, dict), high
    return high


def rendered(config, minion: str, high: dict, state_id: str) -> str:
    caller = render.caller(config, minion)
    conf = state_args(high[state_id], "file")
    template = open(caller.cmd("cp.cache_file", conf["source"])).read()
    return caller.cmd("file.apply_template_on_contents", template, "jinja", conf["context"], None, "base")


def test_grafana_ini_keeps_its_secrets_in_files_and_uses_the_sites_postgresql(example_config, monitoring_high):
    text = rendered(example_config, "monitoring", monitoring_high, "monitoring-grafana-ini-managed")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(text)
    assert ini["database"]["type"] == "postgres"
    assert ini["database"]["host"] == "10.10.10.103:5432" and ini["database"]["name"] == "grafana"
    # Not a password: Grafana's syntax for "read it from this file".
    assert ini["database"]["password"] == "$__file{/etc/grafana/secrets/database_password}"  # noqa: S105
    assert ini["security"]["admin_password"] == "$__file{/etc/grafana/secrets/admin_password}"  # noqa: S105
    assert ini["server"]["http_addr"] == "10.10.10.120" and ini["server"]["http_port"] == "3000"
    for state_id in ("monitoring-grafana-admin-password-managed", "monitoring-grafana-database-password-managed"):
        args = state_args(monitoring_high[state_id], "file")
        assert args["mode"] == "0640" and args["group"] == "grafana" and args["show_changes"] is False


def test_grafana_provisions_both_datasources_and_the_repositorys_dashboards(example_config, monitoring_high):
    sources = yaml.safe_load(rendered(example_config, "monitoring", monitoring_high,
                                      "monitoring-grafana-datasources-managed"))
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    assert by_uid["prometheus"]["url"] == "http://10.10.10.120:9090"
    assert by_uid["loki"]["url"] == "http://10.10.10.120:3100"
    providers = yaml.safe_load(rendered(example_config, "monitoring", monitoring_high,
                                        "monitoring-grafana-dashboard-provider-managed"))["providers"]
    recurse = state_args(monitoring_high["monitoring-grafana-dashboards-managed"], "file")
    assert providers[0]["options"]["path"] == recurse["name"]
    assert recurse["source"] == "salt://monitoring/files/dashboards"


def test_loki_keeps_logs_for_its_retention_on_the_guests_disk(example_config, monitoring_high):
    config = yaml.safe_load(rendered(example_config, "monitoring", monitoring_high, "monitoring-loki-config-managed"))
    assert config["server"]["http_listen_address"] == "10.10.10.120" and config["server"]["http_listen_port"] == 3100
    assert config["compactor"]["retention_enabled"] is True
    assert config["limits_config"]["retention_period"] == "744h"
    assert config["schema_config"]["configs"][0]["store"] == "tsdb"
    assert config["auth_enabled"] is False


@pytest.mark.parametrize(("guest", "access_log"), [("reverse-proxy", True), ("postgresql", False)])
def test_the_shipper_labels_logs_as_the_metrics_and_ships_to_loki(example_config, guest, access_log):
    high = render.caller(example_config, guest).cmd("state.show_sls", "common.log_shipper")
    text = rendered(example_config, guest, high, "common-log-shipper-config-managed")
    assert 'url = "http://10.10.10.120:3100/loki/api/v1/push"' in text
    assert f'guest = "{guest}"' in text and 'vmid  = "10' in text
    assert ("/var/log/nginx/access.log" in text) is access_log
    assert text.count("{") == text.count("}")


def test_the_lab_renders_grafana_loki_and_the_shipper_only(tmp_path):
    from tests.conftest import make_checkout

    _, conf = make_checkout(tmp_path, overlay="lab")
    high = render.caller(conf, "monitoring").cmd("state.show_sls", "monitoring")
    slss = {state["__sls__"] for state in high.values()}
    assert slss == {"monitoring.prometheus", "monitoring.alertmanager", "monitoring.blackbox"}
    assert render.caller(conf, "postgresql").cmd("state.show_sls", "common.log_shipper") == {}


# --- dashboards ------------------------------------------------------------------------------------


def test_the_checked_in_dashboards_are_the_generated_ones():
    files = dashboards.render()
    on_disk = {p.name: p.read_text() for p in dashboards.OUT_DIR.glob("*.json")}
    assert on_disk == files, "run `python -m sitectl.dashboards` and commit the result"


def _exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and (node.get("datasource") or {}).get("uid") == "prometheus":
            yield node["expr"]
        for value in node.values():
            yield from _exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _exprs(value)


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) is not installed")
def test_every_dashboard_query_is_valid_promql_on_a_provisioned_datasource(tmp_path):
    rules, uids = [], set()
    for name, text in dashboards.render().items():
        board = json.loads(text)
        for panel in board["panels"]:
            if panel.get("datasource"):
                uids.add(panel["datasource"]["uid"])
        for i, expr in enumerate(_exprs(board)):
            rules.append({"record": f"dashboard:{name.removesuffix('.json')}:{i}",
                          "expr": expr.replace("$guest", ".*")})
    assert uids <= {"prometheus", "loki"}
    assert len(rules) > 20
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lab_report_lists_the_parts_switched_off_as_not_converged():
    """What the lab overlay switches off is printed under its own heading, never among the passed."""
    import io
    from types import SimpleNamespace

    from sitectl import labctl

    overlay = yaml.safe_load((ROOT / "pillar/overlays/lab.sls").read_text())
    pillar = {"site": load_site(), "roles": CATALOG, "monitoring": overlay["monitoring"]}
    lab = SimpleNamespace(pillar=pillar, guests=sorted(pillar["site"]["guests"]), converges=lambda role: True)
    out = io.StringIO()
    labctl.print_table(lab, {}, {}, out=out)
    report = out.getvalue()
    partly = report.split("converged in part")[1]
    for part in ("grafana", "loki", "alloy"):
        line = next(line for line in partly.splitlines() if line.strip().startswith(f"monitoring.{part} "))
        assert overlay["monitoring"][part]["reason"] in line


def test_a_grafana_route_of_the_site_becomes_grafanas_public_address(tmp_path):
    """With `routes: {grafana: {guest: monitoring, port: 3000}}` the proxy serves Grafana and Grafana
    knows its public URL; without it, Grafana is reached on the guest's address (admin network)."""
    from tests.conftest import make_checkout

    data = yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())
    data["site"]["routes"]["grafana"] = {"guest": "monitoring", "port": 3000}
    site_file = tmp_path / "site.sls"
    site_file.write_text(yaml.safe_dump(data))
    _, conf = make_checkout(tmp_path, site_file)
    high = render.caller(conf, "monitoring").cmd("state.show_sls", "monitoring")
    ini = rendered(conf, "monitoring", high, "monitoring-grafana-ini-managed")
    assert "root_url = https://grafana.your-domain.com/" in ini and "cookie_secure = true" in ini
    probes = [t for t in plan(data["site"])["targets"] if t["job"] == "routes"]
    app_routes = {app["route"] for app in data["site"].get("apps", {}).values() if app.get("route")}
    assert {t["labels"]["route"] for t in probes} == {"nextcloud", "mail", "grafana", "chat", "office", *app_routes}


# --- k3s's kubelets and the alerts the master raises ---------------------------------------------------


def test_every_k3s_node_kubelet_is_a_target_unless_k3s_is_not_installed():
    data = load_site()
    kubelets = [t for t in plan(data)["targets"] if t["job"] == "kubelet"]
    assert [(t["address"], t["labels"]) for t in kubelets] == [
        ("10.10.10.112:10250", {"guest": "k3s", "role": "k3s", "vmid": "112"})]
    assert plan(data)["jobs"]["kubelet"] == {"scheme": "https", "path": "/metrics", "params": {}, "probe": None,
                                             "ca": "k3s", "bearer": "kubelet"}
    # The lab: k3s converges up to its binary, no kubelet listens, none is scraped.
    off = {"k3s": {"install": {"converge": False, "reason": "test"}}}
    assert not [t for t in plan(data, extra=off)["targets"] if t["job"] == "kubelet"]
    assert "kubelet" not in plan(data, extra=off)["jobs"]


def test_kubelets_are_scraped_over_verified_tls_with_the_scrapers_token_from_vault(example_config, monitoring_high):
    config = yaml.safe_load(rendered(example_config, "monitoring", monitoring_high,
                                     "monitoring-prometheus-config-managed"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    kubelet = jobs["kubelet"]
    assert kubelet["scheme"] == "https"
    assert kubelet["tls_config"] == {"ca_file": "/etc/prometheus/k3s-ca.pem"}, "verified, never skipped"
    assert kubelet["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/kubelet.token"}
    assert "authorization" not in jobs["node"] and "tls_config" not in jobs["node"]
    token = state_args(monitoring_high["monitoring-prometheus-kubelet-token-managed"], "file")
    assert token["name"] == "/etc/prometheus/kubelet.token"
    assert (token["user"], token["group"], token["mode"], token["show_changes"]) == ("root", "prometheus", "0640",
                                                                                   False)
    assert token["source"] == "salt://monitoring/files/secret.j2"
    assert token["context"] == {"path": "roles/monitoring/kubelet", "field": "token", "mount": "secret"}
    ca = state_args(monitoring_high["monitoring-prometheus-kubelet-ca-managed"], "file")
    assert ca["name"] == "/etc/prometheus/k3s-ca.pem" and ca["context"]["field"] == "ca"
    for state in (token, ca):
        assert {"file": "monitoring-prometheus-config-managed"} in state["require_in"]
        assert {"cmd": "monitoring-prometheus-reloaded"} in state["onchanges_in"], "a new token reloads Prometheus"


def test_the_lab_renders_no_kubelet_token(tmp_path):
    from tests.conftest import make_checkout

    _, conf = make_checkout(tmp_path, overlay="lab")
    high = render.caller(conf, "monitoring").cmd("state.show_sls", "monitoring.prometheus")
    assert not [sid for sid in high if "kubelet" in sid]


def test_the_master_posts_its_alerts_to_every_alertmanager_of_the_site_and_may_reach_it():
    data = load_site()
    assert plan(data)["alertmanagers"] == ["http://10.10.10.120:9093"]
    urls = ["http://127.0.0.1:19093", "https://am.example.org:9093"]
    assert plan(data, extra={"monitoring": {"alertmanager": {"api_urls": urls}}})["alertmanagers"] == urls
    catalog = copy.deepcopy(CATALOG)
    catalog["monitoring"].update(converge=False, reason="test")
    assert plan(data, catalog)["alertmanagers"] == [], "no monitoring guest that converges: nowhere to post"
    view = site.platform_pillar({"site": data, "roles": CATALOG}, "monitoring")["platform"]["guest"]
    rule = next(r for r in view["firewall"] if r["name"] == "alertmanager")
    assert "10.10.10.110/32" in rule["from"], "the control guest (the production master) reaches Alertmanager"
    assert "10.10.10.0/24" in rule["from"], "the admin network (the lab's master is the lab host)"


@pytest.mark.parametrize("api_urls", [[], ["10.10.10.120:9093"], "http://10.10.10.120:9093"])
def test_alertmanager_api_urls_must_be_a_list_of_urls(api_urls):
    pillar = {"site": load_site(), "roles": CATALOG, "monitoring": {"alertmanager": {"api_urls": api_urls}}}
    with pytest.raises(site.SiteError) as refused:
        site.check(pillar)
    assert "monitoring.alertmanager.api_urls" in str(refused.value)
