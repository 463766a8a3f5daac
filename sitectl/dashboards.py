"""Grafana dashboards of the platform, built with grafana-foundation-sdk (typed builders, not JSON by hand).

One overview of the site and one dashboard per role that exposes metrics (the jobs of
``monitoring:exporters``). The panels select by the labels every target carries (``guest``, ``role``,
``vmid``) and by job, so they fit any site without naming a guest. ``python -m sitectl.dashboards``
writes them to ``salt/monitoring/files/dashboards/``; the render tier regenerates them and fails if the
checked-in files differ, and checks every PromQL expression with promtool.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, loki, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from sitectl import ROOT

OUT_DIR = ROOT / "salt" / "monitoring" / "files" / "dashboards"
# The uids salt/monitoring/files/grafana-datasources.yml.j2 provisions.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
LOKI = DataSourceRef(type_val="loki", uid="loki")


def _query(expr: str, legend: str = "") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(PROMETHEUS)
    return query.legend_format(legend) if legend else query


def _series(title: str, unit: str, *queries: prometheus.Dataquery, width: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(PROMETHEUS).height(8).span(width)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(title: str, expr: str, unit: str = "none", width: int = 6) -> stat.Panel:
    return stat.Panel().title(title).unit(unit).datasource(PROMETHEUS).height(4).span(width).with_target(_query(expr))


def _guest_variable() -> dash.QueryVariable:
    return (dash.QueryVariable("guest").label("guest").datasource(PROMETHEUS)
            .query('label_values(up{job="node"}, guest)').multi(True).include_all(True)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))


def _board(uid: str, title: str) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).tags(["platform"]).refresh("1m").time("now-6h", "now")
            .timezone("browser").editable())


def overview() -> dash.Dashboard:
    g = 'guest=~"$guest"'
    return (_board("platform-overview", "Platform overview")
            .with_variable(_guest_variable())
            .with_row(dash.Row("Health"))
            .with_panel(_stat("Guests up", 'sum(up{job="node"})'))
            .with_panel(_stat("Targets down", "count(up == 0) or vector(0)"))
            .with_panel(_stat("Alerts firing", 'count(ALERTS{alertstate="firing"}) or vector(0)'))
            .with_panel(_stat("Routes answering",
                              'sum(probe_success{job="routes"}) / count(probe_success{job="routes"})',
                              unit="percentunit"))
            .with_row(dash.Row("Guests"))
            .with_panel(_series("CPU busy", "percentunit", _query(
                f'1 - avg by (guest) (rate(node_cpu_seconds_total{{mode="idle", {g}}}[5m]))', "{{guest}}")))
            .with_panel(_series("Memory available", "percentunit", _query(
                f"node_memory_MemAvailable_bytes{{{g}}} / node_memory_MemTotal_bytes{{{g}}}", "{{guest}}")))
            .with_panel(_series("Disk free", "percentunit", _query(
                f'node_filesystem_avail_bytes{{fstype!~"tmpfs|ramfs|overlay|squashfs", {g}}}'
                f' / node_filesystem_size_bytes{{fstype!~"tmpfs|ramfs|overlay|squashfs", {g}}}',
                "{{guest}} {{mountpoint}}")))
            .with_panel(_series("Network received", "Bps", _query(
                f'sum by (guest) (rate(node_network_receive_bytes_total{{device!="lo", {g}}}[5m]))', "{{guest}}")))
            .with_row(dash.Row("Edge"))
            .with_panel(_series("Route probe duration", "s", _query(
                'probe_duration_seconds{job="routes"}', "{{fqdn}} via {{proxy}}")))
            .with_panel(_series("Certificate days left", "d", _query(
                '(probe_ssl_earliest_cert_expiry{job="routes"} - time()) / 86400', "{{fqdn}}")))
            .with_row(dash.Row("Logs"))
            .with_panel(logs.Panel().title("Journal").datasource(LOKI).height(10).span(24)
                        .with_target(loki.Dataquery().expr('{guest=~"$guest", job="journal"}').datasource(LOKI))))


def postgresql() -> dash.Dashboard:
    return (_board("platform-postgresql", "PostgreSQL")
            .with_panel(_stat("Servers up", 'sum(pg_up{job="postgresql"})'))
            .with_panel(_series("Connections / max_connections", "percentunit", _query(
                'sum by (guest) (pg_stat_activity_count{job="postgresql"})'
                ' / on (guest) group_left pg_settings_max_connections{job="postgresql"}', "{{guest}}")))
            .with_panel(_series("Database size", "bytes", _query(
                'pg_database_size_bytes{job="postgresql", datname!~"template.*"}', "{{guest}} {{datname}}")))
            .with_panel(_series("Transactions", "ops", _query(
                'sum by (guest, datname) (rate(pg_stat_database_xact_commit{job="postgresql"}[5m]))',
                "{{guest}} {{datname}}"))))


def rabbitmq() -> dash.Dashboard:
    return (_board("platform-rabbitmq", "RabbitMQ")
            .with_panel(_series("Messages ready", "short", _query(
                'sum by (vhost, queue) (rabbitmq_queue_messages_ready{job="rabbitmq"})', "{{vhost}}/{{queue}}")))
            .with_panel(_series("Consumers", "short", _query(
                'sum by (vhost, queue) (rabbitmq_queue_consumers{job="rabbitmq"})', "{{vhost}}/{{queue}}")))
            .with_panel(_series("Connections", "short", _query(
                'sum by (guest) (rabbitmq_connections{job="rabbitmq"})', "{{guest}}"))))


def reverse_proxy() -> dash.Dashboard:
    return (_board("platform-reverse-proxy", "Reverse proxy")
            .with_panel(_series("Requests", "reqps", _query(
                'sum by (guest) (rate(nginx_http_requests_total{job="nginx"}[5m]))', "{{guest}}")))
            .with_panel(_series("Active connections", "short", _query(
                'nginx_connections_active{job="nginx"}', "{{guest}}")))
            .with_panel(_series("Route probes", "short", _query(
                'probe_success{job="routes"}', "{{fqdn}} via {{proxy}}")))
            .with_panel(_series("Probe HTTP status", "short", _query(
                'probe_http_status_code{job="routes"}', "{{fqdn}}"))))


def vault() -> dash.Dashboard:
    return (_board("platform-vault", "Vault")
            .with_panel(_stat("Unsealed", 'min(vault_core_unsealed{job="vault"})'))
            .with_panel(_series("Requests", "ops", _query(
                'sum by (guest) (rate(vault_core_handle_request_count{job="vault"}[5m]))', "{{guest}}")))
            .with_panel(_series("Leases", "short", _query('vault_expire_num_leases{job="vault"}', "{{guest}}"))))


def gitlab_runner() -> dash.Dashboard:
    return (_board("platform-gitlab-runner", "GitLab Runner")
            .with_panel(_series("Jobs running", "short", _query(
                'sum by (guest) (gitlab_runner_jobs{job="gitlab_runner"})', "{{guest}}")))
            .with_panel(_series("Job failures", "short", _query(
                'sum by (guest) (increase(gitlab_runner_failed_jobs_total{job="gitlab_runner"}[1h]))', "{{guest}}"))))


def node() -> dash.Dashboard:
    g = 'guest=~"$guest"'
    return (_board("platform-node", "Guests")
            .with_variable(_guest_variable())
            .with_panel(_series("Load", "short", _query(f"node_load5{{{g}}}", "{{guest}}")))
            .with_panel(_series("Memory used", "bytes", _query(
                f"node_memory_MemTotal_bytes{{{g}}} - node_memory_MemAvailable_bytes{{{g}}}", "{{guest}}")))
            .with_panel(_series("Disk I/O", "Bps", _query(
                f"sum by (guest) (rate(node_disk_read_bytes_total{{{g}}}[5m])"
                f" + rate(node_disk_written_bytes_total{{{g}}}[5m]))",
                "{{guest}}")))
            .with_panel(_series("Failed units", "short", _query(
                f'node_systemd_unit_state{{state="failed", {g}}} == 1', "{{guest}} {{name}}")))
            .with_panel(_series("Backups: hours since the last success", "h", _query(
                f"(time() - platform_backup_last_success_timestamp_seconds{{{g}}}) / 3600", "{{guest}} {{backup}}"))))


# Dashboard file -> builder. One per job of monitoring:exporters (salt/monitoring/defaults.yaml).
DASHBOARDS = {
    "overview": overview,
    "node": node,
    "postgresql": postgresql,
    "rabbitmq": rabbitmq,
    "nginx": reverse_proxy,
    "vault": vault,
    "gitlab_runner": gitlab_runner,
}


def render() -> dict[str, str]:
    """File name -> the dashboard's JSON as Grafana provisions it."""
    return {f"{name}.json": json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}


def main(out_dir: Path = OUT_DIR) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in set(p.name for p in out_dir.glob("*.json")) - set(files):
        (out_dir / stale).unlink()
    for name, text in files.items():
        (out_dir / name).write_text(text)
    print(f"{len(files)} dashboards in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
