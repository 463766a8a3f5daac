"""What each role needs, in one place: the ext_pillar, the runners and the validator all call these.

- **parameters**: ``salt/<key>/defaults.yaml`` merged with the pillar key of the same name (lists and
  scalars replaced, mappings merged; as ``slsutil.merge`` with ``strategy=recurse``). A state folder
  with a ``defaults.yaml`` takes parameters, and its pillar key is checked against
  ``sitectl/schemas/<key>.yaml``.
- **ports**: the role catalog's firewall rules, ``role -> name -> port``, the one place a port is
  declared.
- **facts of the site that more than one consumer reads**: the proxy's routes and certificate
  lineages (nginx, certbot and the renewal runner), the databases with their owners and clients
  (PostgreSQL's config and the Vault grants), the credentials a client may read, the names a role
  keeps for itself.

The ``platform`` ext_pillar hands all of it to each minion under ``platform:`` (see
``sitectl.site.platform_pillar``); ``salt/lib/platform.jinja`` is the templates' side of it.
"""

from __future__ import annotations

import copy
import ipaddress
from functools import cache

import yaml

from sitectl import ROOT

STATE_ROOT = ROOT / "salt"


def merge(base: dict, over: dict | None) -> dict:
    """``base`` with ``over`` merged in: mappings recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@cache
def parameter_keys() -> tuple[str, ...]:
    """The state folders that take parameters (they have a defaults.yaml), which are also the pillar
    keys of their parameters."""
    return tuple(sorted(path.parent.name for path in STATE_ROOT.glob("*/defaults.yaml")))


@cache
def _defaults(key: str) -> dict:
    with (STATE_ROOT / key / "defaults.yaml").open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)[key]


def parameters(pillar: dict, key: str) -> dict:
    """The parameters of state folder ``key``: its defaults merged with pillar ``key``."""
    return merge(_defaults(key), pillar.get(key) if isinstance(pillar.get(key), dict) else None)


def all_parameters(pillar: dict) -> dict[str, dict]:
    return {key: parameters(pillar, key) for key in parameter_keys()}


def part_converges(params: dict, part: str) -> bool:
    """Whether ``part`` of a role whose parameters are ``params`` converges: the one convention for a
    part switched off (``<role>: {<part>: {converge: false, reason: ...}}``, the lab's parts with no
    build reachable here); a part the parameters do not name converges."""
    spec = params.get(part)
    return not (isinstance(spec, dict) and spec.get("converge") is False)


def parts_not_converged(pillar: dict) -> dict[str, dict[str, str]]:
    """``role -> part -> reason`` for the parts of a converging role its parameters switch off
    (``<role>: {<part>: {converge: false, reason: ...}}``, as the lab does with Nextcloud's server)."""
    out: dict[str, dict[str, str]] = {}
    for key in parameter_keys():
        for part, spec in sorted(parameters(pillar, key).items()):
            if isinstance(spec, dict) and spec.get("converge") is False:
                out.setdefault(key, {})[part] = spec.get("reason") or "switched off"
    return out


def ports(catalog: dict, role: str) -> dict[str, str]:
    """``name -> port`` of ``role``'s firewall rules in the role catalog (ports as strings: a rule may
    name a range, ``'low-high'``)."""
    return {rule["name"]: str(rule["port"]) for rule in (catalog.get(role) or {}).get("firewall", [])}


def all_ports(catalog: dict) -> dict[str, dict[str, str]]:
    return {role: ports(catalog, role) for role in sorted(catalog)}


def guests_with_role(site: dict, role: str) -> list[str]:
    return sorted(name for name, guest in site["guests"].items() if role in guest.get("roles", []))


def ip(guest: dict) -> str:
    return str(ipaddress.ip_interface(guest["address"]).ip)


def reserved_accounts(pillar: dict) -> dict[str, str]:
    """Linux account names no admin may have, with whose they are: every role's ``system_users`` in the
    catalog, and the service users the roles' parameters name."""
    catalog = pillar["roles"]
    out: dict[str, str] = {}
    for role, spec in sorted(catalog.items()):
        for user in spec.get("system_users", []):
            out.setdefault(user, "a system account" if role == "base" else f"the {role} role's service account")
    vault = parameters(pillar, "vault")
    for flavor in vault["flavors"].values():
        out.setdefault(flavor["user"], "the vault role's service account")
    out.setdefault(parameters(pillar, "rabbitmq")["user"], "the rabbitmq role's service account")
    return out


# -- postgresql -------------------------------------------------------------------------------------

# PostgreSQL's own database and role names (roles starting with pg_ are reserved by it as well).
RESERVED_DATABASES = ("postgres", "template0", "template1")
_POSTGRES_ROLES = ("postgres", "public", "none", "current_role", "current_user", "session_user")


def reserved_database_roles(pillar: dict) -> tuple[str, ...]:
    """Role names a database owner cannot have: PostgreSQL's own and the exporter's login role."""
    return (*_POSTGRES_ROLES, parameters(pillar, "postgresql")["exporter"]["role"])


def database_owner(name: str, spec: dict) -> str:
    return spec.get("owner") or name


def databases(site: dict) -> dict[str, dict]:
    """``database -> {owner, clients: [{name, ip}]}`` of the site, clients sorted by name."""
    guests = site["guests"]
    return {
        name: {"owner": database_owner(name, spec),
               "clients": [{"name": client, "ip": ip(guests[client])} for client in sorted(spec.get("clients", []))]}
        for name, spec in sorted((site.get("databases") or {}).items())
    }


# -- rabbitmq ---------------------------------------------------------------------------------------

def reserved_broker_users(pillar: dict) -> dict[str, str]:
    """User names the site may not declare on the broker, with what they are."""
    admin = parameters(pillar, "rabbitmq")["admin"]["name"]
    return {"guest": "RabbitMQ's default user, removed from every broker",
            admin: "the rabbitmq role's management user"}


# -- reverse_proxy ----------------------------------------------------------------------------------

ROUTE_OPTIONS = ("redirects", "headers", "request_buffering")


def route_presets(pillar: dict) -> dict[tuple[str, str], dict]:
    """``(role, port) -> route options`` an application asks of the proxy for a route to its HTTP port:
    each role whose parameters have a ``proxy`` section (Nextcloud's redirects and headers), for the
    port its catalog entry names ``http``."""
    out = {}
    for role in pillar.get("roles") or {}:
        if role in parameter_keys() and ports(pillar["roles"], role).get("http"):
            proxy = parameters(pillar, role).get("proxy")
            if proxy:
                out[(role, ports(pillar["roles"], role)["http"])] = proxy
    return out


def _route_options(site: dict, route: dict, presets: dict) -> dict:
    """A route's redirects, headers and request buffering: the preset of the application its guest
    serves on that port, with the site's own per-route options over it."""
    roles = site["guests"][route["guest"]].get("roles", [])
    preset = next((presets[(role, str(route["port"]))] for role in roles if (role, str(route["port"])) in presets),
                  {})
    options = merge({"redirects": {}, "headers": {}, "request_buffering": True},
                    {key: preset[key] for key in ROUTE_OPTIONS if key in preset})
    return merge(options, {key: route[key] for key in ROUTE_OPTIONS if key in route})


def edge(site: dict, rp: dict, presets: dict | None = None) -> dict:
    """The proxy's routes resolved to their guests' addresses with their options (``route_presets``
    merged with the site's), the ACME settings (the role's merged with the site's), and the
    certificate lineages that cover the routes: one per route over http-01, one wildcard lineage
    (the domain) over dns-01."""
    domain = site.get("domain", "localhost")
    acme = merge(rp["acme"], site.get("acme"))
    wildcard = acme.get("challenge") == "dns-01"
    lineages = {domain: [f"*.{domain}", domain]} if wildcard else {}
    routes = []
    for name, route in sorted((site.get("routes") or {}).items()):
        fqdn = f"{name}.{domain}"
        lineage = domain if wildcard else fqdn
        if not wildcard:
            lineages[fqdn] = [fqdn]
        live = f"{acme['config_dir']}/live/{lineage}"
        routes.append({
            "name": name,
            "fqdn": fqdn,
            "guest": route["guest"],
            "upstream": f"{ip(site['guests'][route['guest']])}:{route['port']}",
            "websocket": route.get("websocket", False),
            "max_body": route.get("max_body", rp["nginx"]["default_max_body"]),
            "timeout": route.get("timeout", rp["nginx"]["default_timeout"]),
            "health_path": route.get("health_path", "/"),
            "lineage": lineage,
            "cert": f"{live}/fullchain.pem",
            "key": f"{live}/privkey.pem",
            "chain": f"{live}/chain.pem",
            **_route_options(site, route, presets or {}),
        })
    # A list, not a mapping: a pillar merge replaces lists, so a lineage the site no longer has
    # cannot linger from an earlier compile.
    return {"acme": acme, "wildcard": wildcard, "routes": routes,
            "lineages": [{"name": name, "domains": domains} for name, domains in sorted(lineages.items())]}


# -- vault ------------------------------------------------------------------------------------------

def mail_certificate_path(rp: dict, lineage: str) -> str:
    """Where the proxy writes ``lineage``'s certificate and key for the mail route's guest."""
    return f"{rp['mail_certificate']['vault_path']}/{lineage}"


def secret_grants(pillar: dict) -> dict[str, list[str]]:
    """Guest -> the KV paths (under the secrets mount) of other roles' secrets it may read: the
    credentials of the database owners and message-broker users it is a client of, and the
    certificate and key of the route named by ``reverse_proxy:mail_certificate:route``, which the
    proxy writes on each renewal for that route's guest (``_runners/acme.py``). The role that owns a
    path writes it (its salt_role_<role> policy covers roles/<role>/*); the grantee only reads.
    """
    site = pillar["site"]
    pg_users = parameters(pillar, "postgresql")["vault"]["users_path"]
    mq_users = parameters(pillar, "rabbitmq")["users_path"]
    grants: dict[str, set[str]] = {}
    for name, spec in (site.get("databases") or {}).items():
        for client in spec.get("clients", []):
            grants.setdefault(client, set()).add(f"{pg_users}/{database_owner(name, spec)}")
    for user, spec in ((site.get("messaging") or {}).get("users") or {}).items():
        for client in spec.get("clients", []):
            grants.setdefault(client, set()).add(f"{mq_users}/{user}")
    rp = parameters(pillar, "reverse_proxy")
    mail = next((r for r in edge(site, rp)["routes"] if r["name"] == rp["mail_certificate"]["route"]), None)
    if mail:
        grants.setdefault(mail["guest"], set()).add(mail_certificate_path(rp, mail["lineage"]))
    return {guest: sorted(paths) for guest, paths in sorted(grants.items())}


# -- mailcow ----------------------------------------------------------------------------------------

def vault_ref(ref: str) -> tuple[str, str]:
    """``vault:<path>#<field>`` -> (path, field)."""
    path, _, field = ref.removeprefix("vault:").partition("#")
    return path, field


def mail(site: dict, mc: dict, rp: dict) -> dict:
    """The site's mail (``site.mail``) as the mailcow role uses it: the mail host (the name of the
    proxy's mail route, which is also the mail certificate's), each domain's mailboxes and aliases by
    full address with the mailbox quota defaulted, DMARC, and the DNS server with the Vault path of
    its TSIG secret (None: the records become a zone snippet)."""
    spec = site.get("mail") or {}
    domains = {}
    for domain, dspec in sorted((spec.get("domains") or {}).items()):
        domains[domain] = {
            "description": dspec.get("description", ""),
            "mailboxes": {f"{local}@{domain}": {"name": box.get("name", ""),
                                                "quota": box.get("quota", mc["mailbox_quota"])}
                          for local, box in sorted((dspec.get("mailboxes") or {}).items())},
            "aliases": {f"{local}@{domain}": sorted(targets)
                        for local, targets in sorted((dspec.get("aliases") or {}).items())},
        }
    servers = guests_with_role(site, "mailcow")
    route = (site.get("routes") or {}).get(rp["mail_certificate"]["route"]) or {}
    web = None
    if len(servers) == 1 and route.get("guest") == servers[0]:
        web = {"guest": servers[0], "ip": ip(site["guests"][servers[0]]), "port": route["port"]}
    api = None
    if web:
        api = {"url": f"http://{web['ip']}:{web['port']}", "mount": mc["vault"]["mount"],
               "key_path": f"{mc['vault']['path']}/{mc['api_key']['name']}", "key_field": mc["api_key"]["field"]}
    dns = spec.get("dns")
    if dns:
        path, field = vault_ref(dns["tsig_secret"])
        dns = {"server": dns["server"], "port": dns.get("port", 53), "tsig_name": dns["tsig_name"],
               "tsig_algorithm": dns.get("tsig_algorithm", "hmac-sha256"), "tsig_secret_path": path,
               "tsig_field": field}
    return {
        "host": f"{rp['mail_certificate']['route']}.{site.get('domain', 'localhost')}",
        "domains": domains,
        "dmarc": {"report": (spec.get("dmarc") or {}).get("report"),
                  "policy": (spec.get("dmarc") or {}).get("policy", "quarantine")},
        "dns": dns or None,
        # mailcow's web server on the guest's internal address (the proxy's upstream), and its API
        # as the mailcow_api module calls it from the guest (key from Vault).
        "web": web,
        "api": api,
        "remove_undeclared": bool(spec.get("remove_undeclared", False)),
    }
