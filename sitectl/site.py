"""The site: one description of the whole platform, its validation, and each guest's view of it.

The site pillar (key ``site``) and the role catalog (key ``roles``) are validated together: a JSON
Schema for the shape, then the rules a schema cannot say (unique VMIDs and addresses, known roles,
routes to existing guests, no literal secrets). Every error names the key path and what is expected.
``guest_view`` derives what one guest needs (its roles, states, firewall openings with resolved
source addresses, the master's address) so that nothing downstream restates the site.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).parent / "schemas"

# Keys whose value is a secret: the value must be a Vault reference.
_SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "cookie", "psk"}
_SECRET_SUFFIXES = ("private_key", "api_key", "secret_key", "unseal_key", "root_token")
_NOT_SECRET_LAST_WORDS = {"id", "path", "ref", "file", "name", "user", "username", "ttl", "length", "policy"}
VAULT_REF = re.compile(r"^vault:[A-Za-z0-9_./-]+#[A-Za-z0-9_-]+$")
# Values that are secrets wherever they stand.
_SECRET_VALUES = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"), "a Vault token"),
    (re.compile(r"\bglrt-[A-Za-z0-9_-]{15,}"), "a GitLab runner token"),
    (re.compile(r"PVEAPIToken=\S+=\S+"), "a Proxmox API token"),
)

SOURCE_KEYWORDS = ("any", "site", "admin", "consumers")

# Names a database or its owner cannot have: PostgreSQL's own, and the exporter's role of the
# postgresql role (roles starting with pg_ are reserved by PostgreSQL as well).
RESERVED_DATABASES = ("postgres", "template0", "template1")
RESERVED_ROLES = ("postgres", "public", "none", "current_role", "current_user", "session_user",
                  "postgres_exporter")
# RabbitMQ user names the site may not declare: the rabbitmq role owns them.
RESERVED_MQ_USERS = {
    "guest": "RabbitMQ's default user, removed from every broker",
    "admin": "the rabbitmq role's management user",
}


class SiteError(ValueError):
    """The site description is invalid; ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"the site description is invalid ({len(errors)} error(s)):\n{lines}")


@cache
def load_schema(name: str) -> dict:
    with (SCHEMA_DIR / f"{name}.yaml").open() as fh:
        return yaml.safe_load(fh)


def _path(prefix: str, parts) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(value) -> str:
    if isinstance(value, str):
        for pattern, what in _SECRET_VALUES:
            if pattern.search(value):
                return f"{what} (not shown)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_errors(instance, schema_name: str, prefix: str) -> list[str]:
    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [_schema_message(error, prefix, schema) for error in errors]


def _schema_message(error: jsonschema.ValidationError, prefix: str, root: dict) -> str:
    where = _path(prefix, error.absolute_path)
    schema = error.schema
    if error.validator == "required":
        missing = error.message.split("'")[1]
        expected = _expected(schema.get("properties", {}).get(missing, {}), root)
        return f"{where}.{missing}: missing; expected {expected}"
    if error.validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        return f"{where}.{extra[0]}: unknown key; expected one of: {', '.join(known)}"
    if "propertyNames" in error.schema_path:  # a mapping key, reported at its parent's path
        return f"{where}.{error.instance}: invalid name; expected {_expected(schema, root)}"
    if error.validator == "uniqueItems":
        return f"{where}: has duplicates; expected {_expected(schema, root)}"
    if error.validator == "minProperties":
        return f"{where}: is empty; expected {_expected(schema, root)}"
    key = error.absolute_path[-1] if error.absolute_path else ""
    shown = "a literal value (not shown)" if _is_secret_key(str(key)) else _describe(error.instance)
    return f"{where}: got {shown}; expected {_expected(schema, root)}"


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return root["$defs"][ref.split("/")[-1]]
    return schema


def _expected(schema: dict, root: dict) -> str:
    return _resolve(schema, root).get("description", "a valid value")


def _is_secret_key(key: str) -> bool:
    words = re.split(r"[_\-.]", key.lower())
    if words[-1] in _NOT_SECRET_LAST_WORDS:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return key.lower().endswith(_SECRET_SUFFIXES)


def secret_errors(data, prefix: str) -> list[str]:
    """Literal secrets anywhere under ``data``: a secret-named key must hold a Vault reference."""
    errors = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}"
                if _is_secret_key(str(key)) and not isinstance(value, (dict, list)):
                    if value is None or not (isinstance(value, str) and VAULT_REF.match(value)):
                        errors.append(
                            f"{sub}: holds a literal value where a secret belongs; expected a Vault "
                            f"reference such as 'vault:platform/{key}#value' (the secret itself lives "
                            f"only in Vault)"
                        )
                        continue
                walk(value, sub)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str):
            for pattern, what in _SECRET_VALUES:
                if pattern.search(node):
                    errors.append(
                        f"{path}: contains {what}; expected a Vault reference 'vault:<path>#<field>' "
                        f"(no secret may be written into pillar)"
                    )

    walk(data, prefix)
    return errors


def _semantic_errors(site: dict, roles: dict) -> list[str]:
    errors = []
    net = None
    cidr = site.get("network", {}).get("cidr")
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        errors.append(f"site.network.cidr: {_describe(cidr)} is not a network address ({exc}); "
                      f"expected a network such as 10.10.10.0/24")
    gateway = site.get("network", {}).get("gateway")
    if net is not None and gateway and ipaddress.ip_address(gateway) not in net:
        errors.append(f"site.network.gateway: {gateway} is outside {net}; expected an address inside "
                      f"site.network.cidr")
    for i, src in enumerate(site.get("network", {}).get("admin_sources", [])):
        try:
            ipaddress.ip_network(src, strict=False)
        except ValueError:
            errors.append(f"site.network.admin_sources[{i}]: {src!r} is not a network; expected CIDR")

    guests = site.get("guests", {})
    seen_vmid: dict[int, str] = {}
    seen_ip: dict[str, str] = {}
    masters = []
    for name, guest in guests.items():
        where = f"site.guests.{name}"
        vmid = guest.get("vmid")
        if vmid in seen_vmid:
            errors.append(f"{where}.vmid: {vmid} is already used by site.guests.{seen_vmid[vmid]}; "
                          f"expected a VMID no other guest has")
        else:
            seen_vmid[vmid] = name
        try:
            iface = ipaddress.ip_interface(guest["address"])
        except ValueError as exc:
            errors.append(f"{where}.address: {_describe(guest['address'])} is not valid ({exc}); "
                          f"expected an address such as 10.10.10.5/24")
        else:
            ip = str(iface.ip)
            if ip in seen_ip:
                errors.append(f"{where}.address: {ip} is already used by site.guests.{seen_ip[ip]}; "
                              f"expected an address no other guest has")
            else:
                seen_ip[ip] = name
            if net is not None:
                if iface.network != net:
                    errors.append(f"{where}.address: {guest['address']} is not in {net}; expected an "
                                  f"address inside site.network.cidr with the same prefix length")
                elif iface.ip in (net.network_address, net.broadcast_address):
                    errors.append(f"{where}.address: {iface.ip} is the network or broadcast address; "
                                  f"expected a host address")
                elif gateway and str(iface.ip) == gateway:
                    errors.append(f"{where}.address: {iface.ip} is the gateway; expected a guest address")
        for j, role in enumerate(guest.get("roles", [])):
            if role == "base":
                errors.append(f"{where}.roles[{j}]: 'base' is given to every guest; expected a role "
                              f"other than base")
            elif role not in roles:
                errors.append(f"{where}.roles[{j}]: unknown role {role!r}; expected one of: "
                              f"{', '.join(sorted(r for r in roles if r != 'base'))}")
        if "salt_master" in guest.get("roles", []):
            masters.append(name)
        for j, other in enumerate(guest.get("uses", [])):
            if other == name:
                errors.append(f"{where}.uses[{j}]: a guest cannot use itself; expected another guest")
            elif other not in guests:
                errors.append(f"{where}.uses[{j}]: no guest named {other!r}; expected one of: "
                              f"{', '.join(sorted(guests))}")

    if len(masters) > 1:
        errors.append(f"site.guests: {', '.join(masters)} all have the role salt_master; expected "
                      f"exactly one Salt master")
    if not masters and not site.get("salt", {}).get("master"):
        errors.append("site.salt.master: missing and no guest has the role salt_master; expected one "
                      "guest with the role salt_master or the master's address here")

    proxies = [n for n, g in guests.items() if "reverse_proxy" in g.get("roles", [])]
    for sub, route in site.get("routes", {}).items():
        where = f"site.routes.{sub}"
        if route.get("guest") not in guests:
            errors.append(f"{where}.guest: no guest named {route.get('guest')!r}; expected one of: "
                          f"{', '.join(sorted(guests))}")
    if site.get("routes") and not proxies:
        errors.append("site.routes: routes are declared but no guest has the role reverse_proxy; "
                      "expected a guest with the role reverse_proxy to serve them")
    for sub, route in site.get("routes", {}).items():
        if route.get("guest") in proxies and route.get("port") in (80, 443):
            errors.append(f"site.routes.{sub}.port: {route['port']} on {route['guest']} is the reverse proxy's own "
                          f"HTTP(S) port (the route would loop); expected the port the application listens on")
    acme = site.get("acme")
    if site.get("routes") and not acme:
        errors.append("site.acme: missing; routes are served over HTTPS with certificates from an ACME "
                      "directory: expected site.acme with directory and email (see pillar/site/example.sls)")
    if acme and acme.get("challenge") == "dns-01" and not acme.get("dns_server"):
        errors.append("site.acme.dns_server: missing; the dns-01 challenge updates this DNS server (RFC 2136): "
                      "expected the IPv4 address of the site's authoritative DNS server")

    errors += _database_errors(site)
    errors += _messaging_errors(site)

    for role_name, role in roles.items():
        for k, rule in enumerate(role.get("firewall", [])):
            for m, src in enumerate(rule.get("from", [])):
                where = f"roles.{role_name}.firewall[{k}].from[{m}]"
                if src in SOURCE_KEYWORDS:
                    continue
                if src.startswith("role:"):
                    if src[5:] not in roles:
                        errors.append(f"{where}: unknown role {src[5:]!r}; expected a role of the catalog")
                elif src.startswith("guest:"):
                    if src[6:] not in guests:
                        errors.append(f"{where}: no guest named {src[6:]!r}; expected a guest of the site")
                else:
                    try:
                        ipaddress.ip_network(src, strict=False)
                    except ValueError:
                        errors.append(f"{where}: {src!r} is not a source; expected any, site, admin, "
                                      f"consumers, role:<role>, guest:<name> or a CIDR")
            port = rule.get("port")
            if isinstance(port, str) and "-" in port:
                low, high = (int(p) for p in port.split("-"))
                if not 1 <= low < high <= 65535:
                    errors.append(f"roles.{role_name}.firewall[{k}].port: {port!r} is not a range; "
                                  f"expected 'low-high' with 1 <= low < high <= 65535")
    return errors


def _messaging_errors(site: dict) -> list[str]:
    """site.messaging: reserved names, declared vhosts, clients that are guests using the broker."""
    messaging = site.get("messaging")
    if messaging is None:
        return []
    guests = site["guests"]
    brokers = sorted(n for n, g in guests.items() if "rabbitmq" in g["roles"])
    if not brokers:
        return ["site.messaging: declared but no guest has the role rabbitmq; expected a guest with the "
                "role rabbitmq to serve it"]
    errors = []
    vhosts = messaging["vhosts"]
    for user, spec in messaging["users"].items():
        where = f"site.messaging.users.{user}"
        if user in RESERVED_MQ_USERS:
            errors.append(f"{where}: the name {user!r} is reserved ({RESERVED_MQ_USERS[user]}); expected "
                          f"another user name")
        for j, client in enumerate(spec["clients"]):
            if client not in guests:
                errors.append(f"{where}.clients[{j}]: no guest named {client!r}; expected one of: "
                              f"{', '.join(sorted(guests))}")
            elif not set(brokers) & set(guests[client].get("uses", [])):
                errors.append(f"{where}.clients[{j}]: guest {client!r} does not list {' or '.join(brokers)} in "
                              f"site.guests.{client}.uses; expected each client to use the rabbitmq guest "
                              f"(that opens 5672 to it)")
        for vhost, perms in spec["permissions"].items():
            if vhost not in vhosts:
                errors.append(f"{where}.permissions.{vhost}: vhost {vhost!r} is not declared; expected one of "
                              f"site.messaging.vhosts: {', '.join(vhosts) or '(none)'}")
            for kind in ("configure", "write", "read"):
                try:
                    re.compile(perms[kind])
                except re.error as exc:
                    errors.append(f"{where}.permissions.{vhost}.{kind}: {_describe(perms[kind])} is not a "
                                  f"regular expression ({exc}); expected a regex such as '.*' or '^chat\\.'")
    return errors


def database_servers(site: dict) -> list[str]:
    return sorted(name for name, guest in site["guests"].items() if "postgresql" in guest.get("roles", []))


def _database_errors(site: dict) -> list[str]:
    """site.databases: names PostgreSQL accepts, one server, clients that are guests using it."""
    databases = site.get("databases", {})
    if not databases:
        return []
    guests = site["guests"]
    errors = []
    servers = database_servers(site)
    if len(servers) != 1:
        who = "no guest has" if not servers else f"{', '.join(servers)} all have"
        errors.append(f"site.databases: {who} the role postgresql; expected exactly one guest with the role "
                      f"postgresql to hold the databases")
    server = servers[0] if len(servers) == 1 else None
    for db, spec in databases.items():
        where = f"site.databases.{db}"
        if db in RESERVED_DATABASES:
            errors.append(f"{where}: {db!r} is reserved by PostgreSQL; expected a database name other than "
                          f"{', '.join(RESERVED_DATABASES)}")
        owner = spec.get("owner", db)
        if "owner" in spec or db not in RESERVED_DATABASES:
            owner_where = f"{where}.owner" if "owner" in spec else f"{where} (its owner, by default the database name)"
            if owner in RESERVED_ROLES or owner.startswith("pg_"):
                errors.append(f"{owner_where}: {owner!r} is a reserved role name; expected a role name other than "
                              f"{', '.join(RESERVED_ROLES)} and not starting with pg_")
        for j, client in enumerate(spec.get("clients", [])):
            client_where = f"{where}.clients[{j}]"
            if client not in guests:
                errors.append(f"{client_where}: no guest named {client!r}; expected one of: "
                              f"{', '.join(sorted(guests))}")
            elif client == server:
                errors.append(f"{client_where}: {client!r} is the database server itself; expected a guest that "
                              f"connects over the network")
            elif server and server not in guests[client].get("uses", []):
                errors.append(f"{client_where}: {client!r} does not list {server!r} in site.guests.{client}.uses, "
                              f"so the firewall of {server} drops its connections; expected a guest whose uses "
                              f"includes {server}")
    return errors


ROLE_PILLARS = ("common", "vault", "postgresql", "reverse_proxy")


def validate(pillar: dict) -> list[str]:
    """Every problem of the site, the role catalog and the roles' pillars, as messages."""
    errors = []
    site = pillar.get("site")
    roles = pillar.get("roles")
    if not isinstance(site, dict):
        return [f"site: got {_describe(site)}; expected the site description (pillar key 'site', "
                f"see pillar/site/example.sls)"]
    if not isinstance(roles, dict):
        return [f"roles: got {_describe(roles)}; expected the role catalog (pillar/platform/roles.sls)"]
    errors += _schema_errors(site, "site", "site")
    errors += _schema_errors(roles, "roles", "roles")
    # The roles' own pillar keys, each with its schema in sitectl/schemas/<key>.yaml.
    for key in ROLE_PILLARS:
        if key in pillar:
            errors += _schema_errors(pillar[key], key, key)
    secrets = [e for key, value in pillar.items() if not str(key).startswith("_")  # Salt's own keys (_errors)
               for e in secret_errors(value, str(key))]
    # A literal secret under a key the schema does not know is reported as the secret it is.
    secret_paths = {e.split(":", 1)[0] for e in secrets}
    errors = [e for e in errors if not (e.split(":", 1)[0] in secret_paths and ": unknown key;" in e)]
    flagged = {e.split(":", 1)[0] for e in errors}
    errors += [e for e in secrets if e.split(":", 1)[0] not in flagged]
    if errors:  # the rules below assume the shape is right
        return errors
    return _semantic_errors(site, roles)


def check(pillar: dict) -> None:
    errors = validate(pillar)
    if errors:
        raise SiteError(errors)


def _ip(guest: dict) -> str:
    return str(ipaddress.ip_interface(guest["address"]).ip)


def master_address(site: dict) -> str:
    explicit = site.get("salt", {}).get("master")
    if explicit:
        return explicit
    for guest in site["guests"].values():
        if "salt_master" in guest["roles"]:
            return _ip(guest)
    raise SiteError(["site.salt.master: no Salt master"])


def _sources(selector: str, name: str, site: dict) -> list[str] | None:
    """Source networks for one selector on guest ``name``; None means any source."""
    guests = site["guests"]
    if selector == "any":
        return None
    if selector == "site":
        return [f"{_ip(g)}/32" for g in guests.values()]
    if selector == "admin":
        return list(site["network"].get("admin_sources", [site["network"]["cidr"]]))
    if selector == "consumers":
        return [f"{_ip(g)}/32" for g in guests.values() if name in g.get("uses", [])]
    if selector.startswith("role:"):
        role = selector[5:]
        return [f"{_ip(g)}/32" for g in guests.values() if role in g["roles"]]
    if selector.startswith("guest:"):
        return [f"{_ip(guests[selector[6:]])}/32"]
    return [str(ipaddress.ip_network(selector, strict=False))]


def _opening(name, proto, port, selectors, guest_name, site):
    sources: set[str] = set()
    anywhere = False
    for selector in selectors:
        resolved = _sources(selector, guest_name, site)
        if resolved is None:
            anywhere = True
        else:
            sources.update(resolved)
    return {
        "name": name,
        "proto": proto,
        "port": str(port),
        "from": "any" if anywhere else sorted(sources, key=ipaddress.ip_network),
    }


def guest_view(pillar: dict, name: str) -> dict | None:
    """What guest ``name`` needs to know, derived from a valid site; None if it is not a guest."""
    site, roles = pillar["site"], pillar["roles"]
    guest = site["guests"].get(name)
    if guest is None:
        return None
    role_names = ["base", *guest["roles"]]
    enabled = [r for r in role_names if roles[r].get("converge", True)]
    disabled = {r: roles[r].get("reason", "switched off") for r in role_names if r not in enabled}
    firewall = []
    for role in enabled:
        for rule in roles[role]["firewall"]:
            firewall.append(_opening(rule["name"], rule.get("proto", "tcp"), rule["port"], rule["from"],
                                     name, site))
    for sub, route in sorted(site.get("routes", {}).items()):
        if route["guest"] == name:
            firewall.append(_opening(f"route-{sub}", "tcp", route["port"], ["role:reverse_proxy"], name, site))
    iface = ipaddress.ip_interface(guest["address"])
    states = []
    for role in enabled:
        for sls in roles[role]["states"]:
            if sls not in states:
                states.append(sls)
    if guest["kind"] == "vm":
        profile = "debian12-vm"
    elif any(roles[r].get("nesting") for r in role_names):
        profile = "debian12-lxc-nested"
    else:
        profile = "debian12-lxc"
    return {
        "name": name,
        "profile": profile,
        "fqdn": f"{name}.{site['domain']}",
        "kind": guest["kind"],
        "vmid": guest["vmid"],
        "node": guest.get("node") or site.get("proxmox", {}).get("node"),
        "cores": guest["cores"],
        "memory": guest["memory"],
        "disk": guest["disk"],
        "address": guest["address"],
        "ip": str(iface.ip),
        "prefixlen": iface.network.prefixlen,
        "roles": enabled,
        "disabled_roles": disabled,
        "states": states,
        "uses": list(guest.get("uses", [])),
        "firewall": [rule for rule in firewall if rule["from"]],
        "closed": sorted({rule["name"] for rule in firewall if not rule["from"]}),
        "master": master_address(site),
    }


def secret_grants(pillar: dict) -> dict[str, list[str]]:
    """Guest -> the KV paths (under the secrets mount) of other roles' secrets it may read: the
    credentials of the database owners and message-broker users it is a client of, and the
    certificate and key of the route named by ``reverse_proxy:mail_certificate:route``, which the
    proxy writes on each renewal for that route's guest (``_runners/acme.py``, the same path). The
    role that owns a path writes it (its salt_role_<role> policy covers roles/<role>/*); the
    grantee only reads.
    """
    site = pillar["site"]
    grants: dict[str, set[str]] = {}
    for db, spec in (site.get("databases") or {}).items():
        for client in spec.get("clients", []):
            grants.setdefault(client, set()).add(f"roles/postgresql/users/{spec.get('owner') or db}")
    for user, spec in ((site.get("messaging") or {}).get("users") or {}).items():
        for client in spec.get("clients", []):
            grants.setdefault(client, set()).add(f"roles/rabbitmq/users/{user}")
    defaults_file = Path(__file__).resolve().parent.parent / "salt" / "reverse_proxy" / "defaults.yaml"
    defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8"))["reverse_proxy"]
    proxy = pillar.get("reverse_proxy") or {}
    mail_route = (proxy.get("mail_certificate") or {}).get("route", defaults["mail_certificate"]["route"])
    route = (site.get("routes") or {}).get(mail_route)
    if route:
        challenge = ((site.get("acme") or {}).get("challenge") or (proxy.get("acme") or {}).get("challenge")
                     or defaults["acme"]["challenge"])
        lineage = site["domain"] if challenge == "dns-01" else f"{mail_route}.{site['domain']}"
        grants.setdefault(route["guest"], set()).add(f"roles/reverse_proxy/certificates/{lineage}")
    return {guest: sorted(paths) for guest, paths in sorted(grants.items())}


def platform_pillar(pillar: dict, minion_id: str) -> dict:
    """Everything the master adds to the pillar of ``minion_id`` (the ``platform`` ext_pillar), from a
    valid site: the one function the ext_pillar, the runners and the tests' scratch labs use."""
    return {"platform": {"guest": guest_view(pillar, minion_id),
                         # Not secret (paths only); salt/vault/configure.sls turns them into policies.
                         "secret_grants": secret_grants(pillar)}}


def cloud_map(pillar: dict) -> dict[str, list[str]]:
    """The salt-cloud map of the site: profile -> guest names."""
    out: dict[str, list[str]] = {}
    for name in sorted(pillar["site"]["guests"]):
        out.setdefault(guest_view(pillar, name)["profile"], []).append(name)
    return out
