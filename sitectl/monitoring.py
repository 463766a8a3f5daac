"""What the monitoring guest watches, derived once from the site and the role catalog.

Every scrape target comes from a guest's roles (only roles that converge there) and the exporters
the monitoring role's parameters declare per role (``monitoring:exporters``, each naming a port of
the role catalog); every probe from the site's routes (through each reverse proxy, with the route's
name as SNI and Host) and the Salt master. Each target carries the labels ``guest``, ``role`` and
``vmid``. Adding a guest or a route to the site adds its targets and nothing else changes.

``plan`` is handed to every minion as pillar ``platform:monitoring`` (``sitectl.site.platform_pillar``):
the monitoring role renders Prometheus's and the blackbox exporter's configuration from it, and the
lab's test compares Prometheus's active targets with ``plan(...)["targets"]``.
"""

from __future__ import annotations

from sitectl import apps as apps_of
from sitectl import roles as roles_of

BLACKBOX_ROUTE_JOB = "routes"
SALT_MASTER_JOB = "salt_master"
# The monitoring guest's own services, scraped as every other target (role: monitoring).
SELF_JOBS = {"prometheus": "prometheus", "alertmanager": "alertmanager", "blackbox": "blackbox-exporter"}


def enabled_roles(catalog: dict, guest: dict) -> list[str]:
    """``base`` and the guest's roles that converge (the role catalog's ``converge``)."""
    return [r for r in ["base", *guest.get("roles", [])] if (catalog.get(r) or {}).get("converge", True)]


def _labels(name: str, guest: dict, role: str) -> dict[str, str]:
    """``vmid`` is ``none`` where the guest has none (Prometheus drops a label with an empty value)."""
    vmid = guest.get("vmid")
    return {"guest": name, "role": role, "vmid": "none" if vmid is None else str(vmid)}


def _role_label(catalog: dict, guest: dict) -> str:
    """A guest-wide target (node-exporter) belongs to the guest's roles, joined with ','."""
    return ",".join(r for r in enabled_roles(catalog, guest) if r != "base") or "base"


def exporter_errors(pillar: dict) -> list[str]:
    """``monitoring:exporters`` may only name roles of the catalog and their ports."""
    catalog = pillar["roles"]
    errors = []
    exporters = roles_of.parameters(pillar, "monitoring")["exporters"]
    for role, jobs in sorted(exporters.items()):
        if role not in catalog:
            errors.append(f"monitoring.exporters.{role}: no role {role!r} in the role catalog; expected one of "
                          f"{', '.join(sorted(catalog))}")
            continue
        ports = roles_of.ports(catalog, role)
        for job, spec in sorted(jobs.items()):
            if spec["port"] not in ports:
                errors.append(f"monitoring.exporters.{role}.{job}.port: the role {role} has no port named "
                              f"{spec['port']!r}; expected one of {', '.join(sorted(ports)) or '(none)'}")
    jobs = [job for role_jobs in exporters.values() for job in role_jobs]
    reserved = {BLACKBOX_ROUTE_JOB, SALT_MASTER_JOB, *SELF_JOBS}
    for job in sorted({j for j in jobs if jobs.count(j) > 1 or j in reserved}):
        errors.append(f"monitoring.exporters: the job name {job!r} is used twice or is reserved; expected a "
                      f"name not in {', '.join(sorted(reserved))} and given once")
    return errors


def _target(job: str, address: str, labels: dict, **extra) -> dict:
    """A scrape target; ``instance`` is the label Prometheus gives it (a probed route: its name)."""
    return {"job": job, "address": address, "instance": extra.get("fqdn", address), "labels": labels, **extra}


def _exporter_targets(site: dict, catalog: dict, exporters: dict, params: dict) -> list[dict]:
    out = []
    for name, guest in sorted(site["guests"].items()):
        for role in enabled_roles(catalog, guest):
            ports = roles_of.ports(catalog, role)
            for job, spec in sorted((exporters.get(role) or {}).items()):
                if spec.get("part") and not roles_of.part_converges(params.get(role) or {}, spec["part"]):
                    continue  # the part that runs this exporter is switched off (the lab): nothing listens
                label_role = _role_label(catalog, guest) if role == "base" else role
                out.append(_target(job, f"{roles_of.ip(guest)}:{ports[spec['port']]}",
                                   _labels(name, guest, label_role)))
    return out


def _self_targets(site: dict, catalog: dict, mon: dict) -> list[dict]:
    out = []
    ports = roles_of.ports(catalog, "monitoring")
    for name in roles_of.guests_with_role(site, "monitoring"):
        guest = site["guests"][name]
        if "monitoring" not in enabled_roles(catalog, guest):
            continue
        for job, port_name in sorted(SELF_JOBS.items()):
            if not roles_of.part_converges(mon, job):
                continue
            host = "127.0.0.1" if job == "blackbox" else roles_of.ip(guest)
            out.append(_target(job, f"{host}:{ports[port_name]}", _labels(name, guest, "monitoring")))
    return out


def _route_probes(site: dict, catalog: dict, params: dict) -> list[dict]:
    """One probe per route and proxy: HTTPS to the proxy's address, the route's name as SNI and Host,
    labelled with the guest that serves the route."""
    edge = roles_of.edge(site, params["reverse_proxy"])  # the site's routes and its apps' (sitectl.apps)
    proxies = [n for n in roles_of.guests_with_role(site, "reverse_proxy")
               if "reverse_proxy" in enabled_roles(catalog, site["guests"][n])]
    out = []
    for proxy in proxies:
        for route in edge["routes"]:
            upstream = site["guests"][route["guest"]]
            labels = {**_labels(route["guest"], upstream, _role_label(catalog, upstream)),
                      "route": route["name"], "fqdn": route["fqdn"], "proxy": proxy}
            out.append(_target(BLACKBOX_ROUTE_JOB, f"https://{roles_of.ip(site['guests'][proxy])}{route['health_path']}",
                               labels,
                               module=f"route_{route['name']}", fqdn=route["fqdn"]))
    return out


def _master_probe(site: dict, master: str, catalog: dict) -> list[dict]:
    """The Salt master's request port (every minion's way in), probed over TCP; labelled with the guest
    whose address it is, or ``salt-master`` when the master is not a guest of the site (the lab's)."""
    port = roles_of.ports(catalog, "salt_master").get("salt-request", "4506")
    owner = next((n for n, g in sorted(site["guests"].items()) if roles_of.ip(g) == master), None)
    labels = (_labels(owner, site["guests"][owner], "salt_master") if owner
              else {"guest": "salt-master", "role": "salt_master", "vmid": "none"})
    return [_target(SALT_MASTER_JOB, f"{master}:{port}", labels, module="tcp_connect")]


def plan(pillar: dict, master: str) -> dict:
    """``targets``: every scrape target (job, address, labels; probes also their blackbox module);
    ``jobs``: the job names with their scrape settings; ``routes``: the blackbox modules of the routes.
    Empty when the site has no guest with the monitoring role."""
    site, catalog = pillar["site"], pillar["roles"]
    params = roles_of.all_parameters(pillar)
    mon = params["monitoring"]
    exporters = mon["exporters"]
    targets = [*_exporter_targets(site, catalog, exporters, params),
               *_route_probes(apps_of.site_with_app_routes(pillar), catalog, params),
               *_master_probe(site, master, catalog),
               *_self_targets(site, catalog, mon)]
    jobs = {}
    for role_jobs in exporters.values():
        for job, spec in role_jobs.items():
            jobs[job] = {"scheme": spec.get("scheme", "http"), "path": spec.get("path", "/metrics"),
                         "params": spec.get("params", {}), "probe": None,
                         "ca": spec.get("ca"), "bearer": spec.get("bearer")}
    plain = {"scheme": "http", "params": {}, "ca": None, "bearer": None}
    jobs[BLACKBOX_ROUTE_JOB] = {**plain, "path": "/probe", "probe": "http"}
    jobs[SALT_MASTER_JOB] = {**plain, "path": "/probe", "probe": "tcp"}
    for job in SELF_JOBS:
        jobs[job] = {**plain, "path": "/metrics", "probe": None}
    used = {t["job"] for t in targets}
    routes = [{"module": t["module"], "fqdn": t["fqdn"]} for t in targets if t["job"] == BLACKBOX_ROUTE_JOB]
    return {"targets": targets,
            "jobs": {job: spec for job, spec in sorted(jobs.items()) if job in used},
            "route_modules": sorted({r["module"]: r for r in routes}.values(), key=lambda r: r["module"]),
            "mail_smarthost": _smarthost(site, catalog, mon),
            "alertmanagers": _alertmanagers(site, catalog, mon),
            "grafana_database": _grafana_database(site, catalog, mon),
            "loki_push": _loki_push(site, catalog)}


def _grafana_database(site: dict, catalog: dict, mon: dict) -> dict | None:
    """Grafana's database on the site's PostgreSQL guest: address, name, owner (whose password the
    postgresql role generates into Vault)."""
    name = mon["grafana"]["database"]
    spec = (site.get("databases") or {}).get(name)
    servers = roles_of.guests_with_role(site, "postgresql")
    if spec is None or not servers:
        return None
    port = roles_of.ports(catalog, "postgresql").get("postgresql", "5432")
    return {"host": f"{roles_of.ip(site['guests'][servers[0]])}:{port}", "name": name,
            "owner": roles_of.database_owner(name, spec)}


def _loki_push(site: dict, catalog: dict) -> str | None:
    """Where every guest's log shipper pushes: Loki on the first monitoring guest."""
    guests = roles_of.guests_with_role(site, "monitoring")
    if not guests:
        return None
    port = roles_of.ports(catalog, "monitoring").get("loki-push", "3100")
    return f"http://{roles_of.ip(site['guests'][guests[0]])}:{port}/loki/api/v1/push"


def _alertmanagers(site: dict, catalog: dict, mon: dict) -> list[str]:
    """Where the master posts the alerts it raises itself (``_runners/acme.py``): the role's
    ``alertmanager:api_urls``, else the Alertmanager of every guest where the monitoring role converges."""
    if mon["alertmanager"].get("api_urls"):
        return list(mon["alertmanager"]["api_urls"])
    port = roles_of.ports(catalog, "monitoring")["alertmanager"]
    guests = [n for n in roles_of.guests_with_role(site, "monitoring")
              if "monitoring" in enabled_roles(catalog, site["guests"][n])]
    return [f"http://{roles_of.ip(site['guests'][name])}:{port}" for name in guests]


def _smarthost(site: dict, catalog: dict, mon: dict) -> str | None:
    """Where Alertmanager sends mail: the role's setting, else the first mail guest's submission port."""
    if mon["alertmanager"]["smarthost"]:
        return mon["alertmanager"]["smarthost"]
    mail = roles_of.guests_with_role(site, "mailcow")
    if not mail:
        return None
    port = roles_of.ports(catalog, "mailcow").get("submission", "587")
    return f"{roles_of.ip(site['guests'][mail[0]])}:{port}"
