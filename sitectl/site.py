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

from sitectl import apps as apps_of
from sitectl import monitoring
from sitectl import roles as roles_of

SCHEMA_DIR = Path(__file__).parent / "schemas"
SHARED_SCHEMA = "_shared"  # definitions every schema may refer to (load_schema)

# Keys whose value is a secret: the value must be a Vault reference.
_SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "cookie", "psk"}
_SECRET_SUFFIXES = ("private_key", "api_key", "secret_key", "unseal_key", "root_token")
_NOT_SECRET_LAST_WORDS = {"id", "path", "ref", "file", "name", "user", "username", "ttl", "length", "policy"}
VAULT_REF = re.compile(r"^vault:[A-Za-z0-9_./-]+#[A-Za-z0-9_-]+$")
# Values that are secrets wherever they stand, under any key.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# GitLab's documented token prefixes (docs.gitlab.com, security/tokens: "Token prefixes"): personal,
# project and group access, OAuth application secret, deploy, runner authentication (and registered),
# CI/CD job, pipeline trigger, feed, incoming mail, agent for Kubernetes, SCIM, feature flags client.
_GITLAB_PREFIXES = ("glpat", "gloas", "gldt", "glrt", "glrtr", "glcbt", "glptt", "glft", "glimt", "glagent",
                    "glsoat", "glffct")
_SECRET_VALUES = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"-----BEGIN PGP PRIVATE KEY BLOCK-----"), "a PGP private key block"),
    (re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"), "a Vault token"),
    # Vault's tokens before 1.10: s. (service), b. (batch), r. (recovery) and 24 base62 characters.
    (re.compile(r"(?<![A-Za-z0-9.])[sbr]\.[A-Za-z0-9]{24}(?![A-Za-z0-9])"), "a Vault token"),
    (re.compile(rf"\b({'|'.join(_GITLAB_PREFIXES)})-[A-Za-z0-9_-]{{15,}}"), "a GitLab token"),
    # A runner registration token of the deprecated workflow.
    (re.compile(r"\bGR1348941[A-Za-z0-9_-]{15,}"), "a GitLab token"),
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other documented unique-id prefixes).
    (re.compile(r"\b(AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b"), "a cloud access key"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), "a cloud access key"),
    (re.compile(r"\bdo[opr]_v1_[a-f0-9]{64}\b"), "a cloud access key"),
    # A Proxmox API token: the header form, or a token id next to its secret (a UUID).
    (re.compile(r"PVEAPIToken=\S+=\S+"), "a Proxmox API token"),
    (re.compile(rf"[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z0-9._-]+\s*[=:\s]\s*{_UUID}"), "a Proxmox API token"),
)
_PROXMOX_TOKEN_ID = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z0-9._-]+$")
_BARE_UUID = re.compile(rf"^\s*{_UUID}\s*$")

SOURCE_KEYWORDS = ("any", "site", "admin", "consumers")


class SiteError(ValueError):
    """The site description is invalid; ``errors`` lists one message per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"the site description is invalid ({len(errors)} error(s)):\n{lines}")


@cache
def load_schema(name: str) -> dict:
    """A schema of sitectl/schemas, with the shared definitions of ``_shared.yaml`` added to its
    ``$defs`` (its own definition of the same name wins)."""
    with (SCHEMA_DIR / f"{name}.yaml").open() as fh:
        schema = yaml.safe_load(fh)
    if name != SHARED_SCHEMA:
        shared = load_schema(SHARED_SCHEMA)["$defs"]
        schema["$defs"] = {**shared, **schema.get("$defs", {})}
    return schema


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


_VAULT_REF_EXPECTED = "expected a Vault reference 'vault:<path>#<field>' (no secret may be written into pillar)"


def _proxmox_secret_errors(node: dict, path: str) -> list[str]:
    """A Proxmox token secret is a bare UUID: secret when it stands next to a token id."""
    if not any(isinstance(v, str) and _PROXMOX_TOKEN_ID.match(v) for v in node.values()):
        return []
    return [f"{path}.{key}: contains a Proxmox API token secret (a UUID next to a token id); {_VAULT_REF_EXPECTED}"
            for key, value in node.items()
            if isinstance(value, str) and _BARE_UUID.match(value) and not _is_secret_key(str(key))]


def _literal_under_secret_key(key, value) -> bool:
    """A secret-named key holding a scalar that is not a Vault reference."""
    if not _is_secret_key(str(key)) or isinstance(value, (dict, list)):
        return False
    return value is None or not (isinstance(value, str) and VAULT_REF.match(value))


def secret_errors(data, prefix: str) -> list[str]:
    """Literal secrets anywhere under ``data``: a secret-named key must hold a Vault reference, and no
    value may look like a secret of a known shape, whatever its key."""
    errors = []

    def walk(node, path):
        if isinstance(node, dict):
            errors.extend(_proxmox_secret_errors(node, path))
            for key, value in node.items():
                if _literal_under_secret_key(key, value):
                    errors.append(f"{path}.{key}: holds a literal value where a secret belongs; expected a Vault "
                                  f"reference such as 'vault:platform/{key}#value' (the secret itself lives "
                                  f"only in Vault)")
                else:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str):
            errors.extend(f"{path}: contains {what}; {_VAULT_REF_EXPECTED}"
                          for pattern, what in _SECRET_VALUES if pattern.search(node))

    walk(data, prefix)
    return errors


def _no_guest(where: str, name, guests: dict) -> str:
    return f"{where}: no guest named {name!r}; expected one of: {', '.join(sorted(guests))}"


def _site_network(site: dict):
    try:
        return ipaddress.ip_network(site.get("network", {}).get("cidr"), strict=True)
    except ValueError:
        return None


def _network_errors(site: dict) -> list[str]:
    errors = []
    network = site.get("network", {})
    cidr = network.get("cidr")
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        net = None
        errors.append(f"site.network.cidr: {_describe(cidr)} is not a network address ({exc}); "
                      f"expected a network such as 10.10.10.0/24")
    gateway = network.get("gateway")
    if net is not None and gateway and ipaddress.ip_address(gateway) not in net:
        errors.append(f"site.network.gateway: {gateway} is outside {net}; expected an address inside "
                      f"site.network.cidr")
    for i, src in enumerate(network.get("admin_sources", [])):
        try:
            ipaddress.ip_network(src, strict=False)
        except ValueError:
            errors.append(f"site.network.admin_sources[{i}]: {src!r} is not a network; expected CIDR")
    return errors


def _address_errors(where: str, address, net, gateway) -> list[str]:
    """One guest's address on its own: valid, inside the site's network, a host address."""
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError as exc:
        return [f"{where}: {_describe(address)} is not valid ({exc}); expected an address such as 10.10.10.5/24"]
    if net is None:
        return []
    if iface.network != net:
        return [f"{where}: {address} is not in {net}; expected an address inside site.network.cidr with the "
                f"same prefix length"]
    if iface.ip in (net.network_address, net.broadcast_address):
        return [f"{where}: {iface.ip} is the network or broadcast address; expected a host address"]
    if gateway and str(iface.ip) == gateway:
        return [f"{where}: {iface.ip} is the gateway; expected a guest address"]
    return []


def _unique_errors(site: dict) -> list[str]:
    """VMIDs and addresses no two guests share."""
    errors = []
    seen_vmid: dict[int, str] = {}
    seen_ip: dict[str, str] = {}
    for name, guest in site["guests"].items():
        where = f"site.guests.{name}"
        vmid = guest.get("vmid")  # None: the Proxmox driver takes one from /cluster/nextid
        if vmid is not None and vmid in seen_vmid:
            errors.append(f"{where}.vmid: {vmid} is already used by site.guests.{seen_vmid[vmid]}; "
                          f"expected a VMID no other guest has")
        elif vmid is not None:
            seen_vmid[vmid] = name
        try:
            address = str(ipaddress.ip_interface(guest["address"]).ip)
        except ValueError:
            continue  # reported by _address_errors
        if address in seen_ip:
            errors.append(f"{where}.address: {address} is already used by site.guests.{seen_ip[address]}; "
                          f"expected an address no other guest has")
        else:
            seen_ip[address] = name
    return errors


def _guest_errors(site: dict, roles: dict) -> list[str]:
    """Each guest's address, roles and `uses` on their own."""
    errors = []
    guests = site["guests"]
    net = _site_network(site)
    gateway = site.get("network", {}).get("gateway")
    choosable = ", ".join(sorted(r for r in roles if r != "base"))
    for name, guest in guests.items():
        where = f"site.guests.{name}"
        errors += _address_errors(f"{where}.address", guest["address"], net, gateway)
        for j, role in enumerate(guest.get("roles", [])):
            if role == "base":
                errors.append(f"{where}.roles[{j}]: 'base' is given to every guest; expected a role other than base")
            elif role not in roles:
                errors.append(f"{where}.roles[{j}]: unknown role {role!r}; expected one of: {choosable}")
        for j, other in enumerate(guest.get("uses", [])):
            if other == name:
                errors.append(f"{where}.uses[{j}]: a guest cannot use itself; expected another guest")
            elif other not in guests:
                errors.append(_no_guest(f"{where}.uses[{j}]", other, guests))
    return errors


def _port_span(port) -> tuple[int, int]:
    low, _, high = str(port).partition("-")
    return int(low), int(high or low)


def _port_conflict_errors(site: dict, roles: dict) -> list[str]:
    """Two roles on one guest that open the same port (the role catalog) would both bind it: the second
    service fails to start, or one takes the other's traffic (nginx of the proxy and of Nextcloud, k3s's
    ingress). Roles that share the state serving the port (the two runners) are one service there."""
    errors = []
    for name, guest in site["guests"].items():
        opened = []  # (role, rule, proto, low, high)
        for role in guest["roles"]:
            for rule in (roles.get(role) or {}).get("firewall", []):
                opened.append((role, rule, rule.get("proto", "tcp"), *_port_span(rule["port"])))
        reported = set()
        for i, (role_a, rule_a, proto_a, low_a, high_a) in enumerate(opened):
            for role_b, rule_b, proto_b, low_b, high_b in opened[i + 1:]:
                if role_a == role_b or proto_a != proto_b or high_a < low_b or high_b < low_a:
                    continue
                if set(roles[role_a].get("states", [])) & set(roles[role_b].get("states", [])):
                    continue
                pair = (role_a, role_b, max(low_a, low_b))
                if pair in reported:
                    continue
                reported.add(pair)
                port = rule_a["port"] if low_a == high_a else rule_b["port"]
                errors.append(
                    f"site.guests.{name}.roles: the roles {role_a} and {role_b} both open {proto_a} port {port} "
                    f"({role_a}: {rule_a['name']}, {role_b}: {rule_b['name']} in the role catalog) and cannot share "
                    f"a guest; expected them on two guests (for example {role_b} on a guest of its own)")
    return errors


def _mount_errors(pillar: dict) -> list[str]:
    """Mount points: LXC only, distinct paths off /, and a Nextcloud guest that declares volumes keeps
    its data directory on one of them (else the files would fill the root disk, unseen by vzdump's
    per-volume settings)."""
    errors = []
    site = pillar["site"]
    nextcloud = roles_of.parameters(pillar, "nextcloud")
    data_dir, root = nextcloud.get("data_dir", "").rstrip("/"), nextcloud.get("root", "").rstrip("/")
    if roles_of.guests_with_role(site, "nextcloud") and (
            (data_dir + "/").startswith(root + "/") or (root + "/").startswith(data_dir + "/")):
        errors.append(f"nextcloud.data_dir: {data_dir} and the web root nextcloud.root {root} overlap; expected "
                      f"the data directory outside the web root (the web server must never serve it)")
    for name, guest in site["guests"].items():
        mounts = guest.get("mounts") or []
        where = f"site.guests.{name}.mounts"
        if mounts and guest["kind"] != "lxc":
            errors.append(f"{where}: mount points are an LXC guest's volumes (PVE's mpN); expected kind lxc, or "
                          f"no mounts on the VM {name}")
            continue
        seen: dict[str, int] = {}
        for j, mount in enumerate(mounts):
            path = mount["path"].rstrip("/") or "/"
            parts = path.split("/")
            if path == "/" or ".." in parts or "." in parts:
                errors.append(f"{where}[{j}].path: {mount['path']!r} is not a mount point; expected an absolute "
                              f"path other than / without '.' or '..' (such as /srv/nextcloud-data)")
            elif path in seen:
                errors.append(f"{where}[{j}].path: {path} is already mounted by {where}[{seen[path]}]; expected "
                              f"one volume per path")
            else:
                seen[path] = j
        if mounts and "nextcloud" in guest["roles"]:
            if not any(data_dir == p or data_dir.startswith(p + "/") for p in seen):
                errors.append(f"{where}: the nextcloud role's data directory {data_dir} is on none of {name}'s "
                              f"mount points ({', '.join(sorted(seen)) or 'none'}); expected a mount with path "
                              f"{data_dir} (or nextcloud:data_dir on one of them)")
    return errors


def _needs_errors(site: dict, roles: dict) -> list[str]:
    """Each role's ``needs`` (role catalog): a guest of the site has the needed role, and the guest that
    needs it lists one such guest in ``uses`` (else the firewall drops its connections)."""
    errors = []
    for name, guest in site["guests"].items():
        for j, role in enumerate(guest["roles"]):
            for need in roles.get(role, {}).get("needs", []):
                servers = roles_of.guests_with_role(site, need)
                if not servers:
                    errors.append(f"site.guests.{name}.roles[{j}]: the role {role} needs a guest with the role "
                                  f"{need}, and the site has none; expected a guest with the role {need} (or "
                                  f"no {role} on {name})")
                elif not set(servers) & set(guest.get("uses", [])):
                    errors.append(f"site.guests.{name}.uses: the role {role} connects to {need}, but {name} does "
                                  f"not use {' or '.join(servers)}, so the firewall drops its connections; "
                                  f"expected uses to include {' or '.join(servers)}")
    return errors


def _admin_errors(pillar: dict) -> list[str]:
    """Admins are people: none named like a system account or a role's service account."""
    reserved = roles_of.reserved_accounts(pillar)
    return [f"site.admins.{name}: the name {name!r} is {reserved[name]}; expected another user name (reserved: "
            f"{', '.join(sorted(reserved))})"
            for name in pillar["site"].get("admins", {}) if name in reserved]


def _master_errors(site: dict) -> list[str]:
    masters = roles_of.guests_with_role(site, "salt_master")
    if len(masters) > 1:
        return [f"site.guests: {', '.join(masters)} all have the role salt_master; expected exactly one Salt master"]
    if not masters and not site.get("salt", {}).get("master"):
        return ["site.salt.master: missing and no guest has the role salt_master; expected one guest with the "
                "role salt_master or the master's address here"]
    return []


def _route_errors(site: dict) -> list[str]:
    """Routes to guests that exist, a proxy to serve them, an ACME directory for their certificates."""
    errors = []
    guests = site["guests"]
    routes = site.get("routes", {})
    proxies = roles_of.guests_with_role(site, "reverse_proxy")
    for sub, route in routes.items():
        if route.get("guest") not in guests:
            errors.append(_no_guest(f"site.routes.{sub}.guest", route.get("guest"), guests))
    if routes and not proxies:
        errors.append("site.routes: routes are declared but no guest has the role reverse_proxy; "
                      "expected a guest with the role reverse_proxy to serve them")
    for sub, route in routes.items():
        if route.get("guest") in proxies and route.get("port") in (80, 443):
            errors.append(f"site.routes.{sub}.port: {route['port']} on {route['guest']} is the reverse proxy's own "
                          f"HTTP(S) port (the route would loop); expected the port the application listens on")
    acme = site.get("acme")
    if routes and not acme:
        errors.append("site.acme: missing; routes are served over HTTPS with certificates from an ACME "
                      "directory: expected site.acme with directory and email (see pillar/site/example.sls)")
    if acme and acme.get("challenge") == "dns-01" and not acme.get("dns_server"):
        errors.append("site.acme.dns_server: missing; the dns-01 challenge updates this DNS server (RFC 2136): "
                      "expected the IPv4 address of the site's authoritative DNS server")
    return errors


def _source_error(where: str, src: str, roles: dict, guests: dict) -> str | None:
    if src in SOURCE_KEYWORDS:
        return None
    if src.startswith("role:"):
        return None if src[5:] in roles else f"{where}: unknown role {src[5:]!r}; expected a role of the catalog"
    if src.startswith("guest:"):
        return None if src[6:] in guests else f"{where}: no guest named {src[6:]!r}; expected a guest of the site"
    try:
        ipaddress.ip_network(src, strict=False)
    except ValueError:
        return (f"{where}: {src!r} is not a source; expected any, site, admin, consumers, role:<role>, "
                f"guest:<name> or a CIDR")
    return None


def _catalog_errors(site: dict, roles: dict) -> list[str]:
    """The role catalog's firewall rules: sources that resolve, port ranges that are ranges."""
    errors = []
    for role_name, role in roles.items():
        for k, need in enumerate(role.get("needs", [])):
            if need not in roles or need in ("base", role_name):
                errors.append(f"roles.{role_name}.needs[{k}]: {need!r} is not another role of the catalog; "
                              f"expected one of: {', '.join(sorted(set(roles) - {'base', role_name}))}")
        for k, rule in enumerate(role.get("firewall", [])):
            for m, src in enumerate(rule.get("from", [])):
                error = _source_error(f"roles.{role_name}.firewall[{k}].from[{m}]", src, roles, site["guests"])
                if error:
                    errors.append(error)
            port = rule.get("port")
            if isinstance(port, str) and "-" in port:
                low, high = (int(p) for p in port.split("-"))
                if not 1 <= low < high <= 65535:
                    errors.append(f"roles.{role_name}.firewall[{k}].port: {port!r} is not a range; "
                                  f"expected 'low-high' with 1 <= low < high <= 65535")
    return errors


def _client_errors(where: str, clients: list, server: str | None, servers: list[str], site: dict,
                   port: str) -> list[str]:
    """Clients of a server role: guests of the site, not the server, and using it (which opens ``port``)."""
    errors = []
    guests = site["guests"]
    for j, client in enumerate(clients):
        client_where = f"{where}.clients[{j}]"
        if client not in guests:
            errors.append(_no_guest(client_where, client, guests))
        elif client == server:
            errors.append(f"{client_where}: {client!r} is the server itself; expected a guest that connects over "
                          f"the network")
        elif servers and not set(servers) & set(guests[client].get("uses", [])):
            errors.append(f"{client_where}: {client!r} does not list {' or '.join(servers)} in "
                          f"site.guests.{client}.uses, so the firewall drops its connections to port {port}; "
                          f"expected a guest whose uses includes {' or '.join(servers)}")
    return errors


def _messaging_errors(pillar: dict) -> list[str]:
    """site.messaging: reserved names, declared vhosts, clients that are guests using the broker."""
    site = pillar["site"]
    messaging = site.get("messaging")
    if messaging is None:
        return []
    brokers = roles_of.guests_with_role(site, "rabbitmq")
    if not brokers:
        return ["site.messaging: declared but no guest has the role rabbitmq; expected a guest with the "
                "role rabbitmq to serve it"]
    errors = []
    reserved = roles_of.reserved_broker_users(pillar)
    amqp = roles_of.ports(pillar["roles"], "rabbitmq").get("amqp", "(none)")
    vhosts = messaging["vhosts"]
    for user, spec in messaging["users"].items():
        where = f"site.messaging.users.{user}"
        if user in reserved:
            errors.append(f"{where}: the name {user!r} is reserved ({reserved[user]}); expected another user name")
        errors += _client_errors(where, spec["clients"], None, brokers, site, amqp)
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


def _database_errors(pillar: dict) -> list[str]:
    """site.databases: names PostgreSQL accepts, one server, clients that are guests using it."""
    site = pillar["site"]
    databases = site.get("databases", {})
    if not databases:
        return []
    errors = []
    servers = roles_of.guests_with_role(site, "postgresql")
    if len(servers) != 1:
        who = "no guest has" if not servers else f"{', '.join(servers)} all have"
        errors.append(f"site.databases: {who} the role postgresql; expected exactly one guest with the role "
                      f"postgresql to hold the databases")
    server = servers[0] if len(servers) == 1 else None
    reserved_roles = roles_of.reserved_database_roles(pillar)
    port = roles_of.ports(pillar["roles"], "postgresql").get("postgresql", "(none)")
    for db, spec in databases.items():
        where = f"site.databases.{db}"
        if db in roles_of.RESERVED_DATABASES:
            errors.append(f"{where}: {db!r} is reserved by PostgreSQL; expected a database name other than "
                          f"{', '.join(roles_of.RESERVED_DATABASES)}")
        owner = roles_of.database_owner(db, spec)
        if "owner" in spec or db not in roles_of.RESERVED_DATABASES:
            owner_where = f"{where}.owner" if "owner" in spec else f"{where} (its owner, by default the database name)"
            if owner in reserved_roles or owner.startswith("pg_"):
                errors.append(f"{owner_where}: {owner!r} is a reserved role name; expected a role name other than "
                              f"{', '.join(reserved_roles)} and not starting with pg_")
        errors += _client_errors(where, spec.get("clients", []), server, [server] if server else [], site, port)
    return errors


def _mail_errors(pillar: dict) -> list[str]:
    """site.mail: one mailcow guest to serve it, no address both a mailbox and an alias (mailcow refuses
    it), a TSIG secret the mailcow guest may read."""
    site = pillar["site"]
    mail = site.get("mail")
    if mail is None:
        return []
    errors = []
    servers = roles_of.guests_with_role(site, "mailcow")
    if len(servers) != 1:
        who = "no guest has" if not servers else f"{', '.join(servers)} all have"
        errors.append(f"site.mail: {who} the role mailcow; expected exactly one guest with the role mailcow to "
                      f"serve the mail domains")
    route = roles_of.parameters(pillar, "reverse_proxy")["mail_certificate"]["route"]
    if len(servers) == 1 and (site.get("routes") or {}).get(route, {}).get("guest") != servers[0]:
        errors.append(f"site.routes.{route}: missing or not to {servers[0]}; expected the route {route} to the "
                      f"mailcow guest {servers[0]} (its web UI, its API, and the mail certificate's name)")
    for domain, spec in mail["domains"].items():
        for local in sorted(set(spec.get("mailboxes") or {}) & set(spec.get("aliases") or {})):
            errors.append(f"site.mail.domains.{domain}.aliases.{local}: {local}@{domain} is also a mailbox; "
                          f"expected an alias whose address is not a mailbox (mailcow refuses it)")
    dns = mail.get("dns")
    if dns:
        prefix = f"{roles_of.parameters(pillar, 'mailcow')['vault']['path']}/"
        path, _ = roles_of.vault_ref(dns["tsig_secret"])
        if not path.startswith(prefix):
            errors.append(f"site.mail.dns.tsig_secret: {path} is outside {prefix}, which only the mailcow guest's "
                          f"policy reads; expected a Vault reference under {prefix}")
    return errors


def _role_pillar_errors(pillar: dict, roles: dict) -> list[str]:
    """The roles' own pillar keys: each checked against sitectl/schemas/<key>.yaml; a role that takes no
    parameters has no pillar key."""
    errors = []
    keys = roles_of.parameter_keys()
    for key in keys:
        if key in pillar:
            errors += _schema_errors(pillar[key], key, key)
    for key in sorted(set(roles) - set(keys)):
        if key in pillar:
            errors.append(f"{key}: the role {key} takes no parameters; expected no pillar key {key!r} (roles with "
                          f"parameters: {', '.join(keys)})")
    return errors


def _semantic_errors(pillar: dict) -> list[str]:
    """The rules a schema cannot say, on a site whose shape is right."""
    site, roles = pillar["site"], pillar["roles"]
    return [*_network_errors(site), *_guest_errors(site, roles), *_unique_errors(site), *_master_errors(site),
            *_needs_errors(site, roles), *_admin_errors(pillar), *_route_errors(site), *_database_errors(pillar),
            *_messaging_errors(pillar), *_catalog_errors(site, roles), *_mail_errors(pillar),
            *monitoring.exporter_errors(pillar),
            *_port_conflict_errors(site, roles), *_mount_errors(pillar),
            *apps_of.errors(pillar)]


def _key_errors(node, path: str) -> list[str]:
    """Mapping keys that are not strings (a number or a boolean YAML read from an unquoted key): every
    rule below names keys in messages and sorts them, so they are refused first."""
    errors = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                errors.append(f"{path}.{key}: the key {key!r} is a {type(key).__name__}, not a string; expected a "
                              f"name (quote it in YAML: '{key}')")
            else:
                errors += _key_errors(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            errors += _key_errors(value, f"{path}[{i}]")
    return errors


def validate(pillar: dict) -> list[str]:
    """Every problem of the site, the role catalog and the roles' pillars, as messages."""
    errors = [e for key, value in pillar.items() if isinstance(key, str) and not key.startswith("_")
              for e in _key_errors(value, key)]
    if errors:
        return errors
    site = pillar.get("site")
    roles = pillar.get("roles")
    if not isinstance(site, dict):
        return [f"site: got {_describe(site)}; expected the site description (pillar key 'site', "
                f"see pillar/site/example.sls)"]
    if not isinstance(roles, dict):
        return [f"roles: got {_describe(roles)}; expected the role catalog (pillar/platform/roles.sls)"]
    errors += _schema_errors(site, "site", "site")
    errors += _schema_errors(roles, "roles", "roles")
    errors += _role_pillar_errors(pillar, roles)
    secrets = [e for key, value in pillar.items() if not str(key).startswith("_")  # Salt's own keys (_errors)
               for e in secret_errors(value, str(key))]
    # A literal secret is reported as the secret it is, unless the schema's message already hides it.
    secret_paths = {e.split(":", 1)[0] for e in secrets}
    errors = [e for e in errors if e.split(":", 1)[0] not in secret_paths or "(not shown)" in e]
    flagged = {e.split(":", 1)[0] for e in errors}
    errors += [e for e in secrets if e.split(":", 1)[0] not in flagged]
    if errors:  # the rules below assume the shape is right
        return errors
    return _semantic_errors(pillar)


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
    if selector == "any":
        return None
    if selector == "admin":
        return list(site["network"].get("admin_sources", [site["network"]["cidr"]]))
    kind, _, arg = selector.partition(":")
    chosen = {
        "site": lambda g_name, g: True,
        "consumers": lambda g_name, g: name in g.get("uses", []),
        "role": lambda g_name, g: arg in g["roles"],
        "guest": lambda g_name, g: g_name == arg,
    }.get(kind)
    if chosen is None:
        return [str(ipaddress.ip_network(selector, strict=False))]
    return [f"{_ip(g)}/32" for g_name, g in site["guests"].items() if chosen(g_name, g)]


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


# The minion settings every guest has from its first start on: salt-cloud's drivers write them before
# the first boot (_clouds/lxclab.py, _clouds/proxmox_platform.py) and common.minion keeps them.
MINION_SETTINGS = {
    "hash_type": "sha256",
    # A request to the master (a file, the pillar, a Vault token) whose reply never comes is sent
    # again after this many seconds instead of Salt's 60. Such lost replies were seen in the lab,
    # one or two per guest while a dozen guests converged at once, each holding its state for the
    # whole timeout; every request the master answers here takes well under a second, and Salt's
    # three tries stay.
    "request_channel_timeout": 15,
    # Salt syncs every kind of custom module from the master on every highstate by default: about
    # 2 s of a no-op's 3 s on a quiet machine. salt/top.sls syncs instead, and only when the
    # master's modules differ from those this minion last synced (their SHA-256 is in the pillar).
    "autoload_dynamic_modules": False,
    # A function looked up under a name no module provides (a state's `unless` makes Salt ask for
    # `<state>.mod_run_check`; a module's __virtual__ asks whether another module is there) made
    # Salt's loader import every module it has, of every kind, to search them: about 1.3 s in the
    # first such state of each run. Strict matching searches only the modules whose file name
    # contains the name looked up, which every module of Salt's, saltext-vault's and this tree's
    # does (checked when this was set).
    "lazy_loader_strict_matching": True,
    # Each job in a process of its own (Salt's default, kept on purpose): while a long highstate runs,
    # saltutil.find_job and test.ping still answer, so the master's gather_job_timeout never takes a
    # busy minion for a gone one, and a job's memory is freed when it ends. With threads instead, the
    # whole lab's no-op took as long (median 16.4 s against 15.4 s, 2 cores, 11 guests at once, the same
    # CPU seconds in the guests), and a job that crashes would take the minion with it.
    "multiprocessing": True,
    # The grains are read at start and kept for the life of the process (no periodic refresh): a
    # highstate reads them, never gathers them again.
    "grains_refresh_every": 0,
    "random_reauth_delay": 10,
    "log_level_logfile": "warning",
    # All of these are in the minion's config before its first start, so the first highstate's
    # common.minion finds the running minion already as configured and restarts nothing: a restart
    # after a guest's first highstate cost its bring-up phase half a minute, and a publication sent
    # while the minion restarted was lost.
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
    elif "k3s" in role_names:
        profile = "debian12-lxc-k3s"
    elif any(roles[r].get("nesting") for r in role_names):
        profile = "debian12-lxc-nested"
    else:
        profile = "debian12-lxc"
    return {
        "name": name,
        "profile": profile,
        "fqdn": f"{name}.{site['domain']}",
        "kind": guest["kind"],
        "vmid": guest.get("vmid"),
        "protection": guest.get("protection", False),
        "tags": list(guest.get("tags", [])),
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
        # Volumes beside the root disk (PVE's mp0, mp1, ...; the lab's bind mounts), in the site's order.
        "mounts": [{"path": m["path"], "size": m["size"], "storage": m.get("storage"),
                    "backup": m.get("backup", True)} for m in guest.get("mounts", [])],
        # Docker or k3s runs here: traffic forwarded to containers is filtered too (common.firewall).
        "containers": any(roles[r].get("nesting") for r in enabled),
        "firewall": [rule for rule in firewall if rule["from"]],
        "closed": sorted({rule["name"] for rule in firewall if not rule["from"]}),
        "master": master_address(site),
        "minion": dict(MINION_SETTINGS),
    }


def platform_pillar(pillar: dict, minion_id: str) -> dict:
    """Everything the master adds to the pillar of ``minion_id`` (the ``platform`` ext_pillar), from a
    valid site: the one function the ext_pillar, the runners and the tests' scratch labs use.

    ``guest``: this guest's view (None for a minion that is not a guest of the site); ``ports``: every
    role's ports; ``params``: every role's parameters (defaults merged with its pillar key); ``edge``:
    the routes and certificate lineages; ``databases``: owners and clients; ``secret_grants``: the
    credentials each client may read (paths only, no secret: salt/vault/configure.sls turns them into
    policies); ``apps`` and ``k3s``: the apps' facts and the k3s cluster with its manifest sets
    (``sitectl/apps.py``; the edge's routes include the apps'); ``mail``: the mail host, domains,
    mailboxes, aliases, DMARC and DNS server of ``site.mail``. ``salt/lib/platform.jinja`` is how the
    templates read them.
    """
    site, catalog = pillar["site"], pillar["roles"]
    params = roles_of.all_parameters(pillar)
    return {"platform": {"guest": guest_view(pillar, minion_id),
                         "ports": roles_of.all_ports(catalog),
                         "params": params,
                         "edge": roles_of.edge(apps_of.site_with_app_routes(pillar), params["reverse_proxy"],
                                                roles_of.route_presets(pillar)),
                         "databases": roles_of.databases(site),
                         "secret_grants": roles_of.secret_grants(pillar),
                         "monitoring": monitoring.plan(pillar, master_address(site)),
                         "apps": apps_of.app_facts(pillar),
                         "k3s": apps_of.cluster(pillar),
                         "mail": roles_of.mail(site, params["mailcow"], params["reverse_proxy"])}}


def cloud_map(pillar: dict) -> dict[str, list[str]]:
    """The salt-cloud map of the site: profile -> guest names."""
    out: dict[str, list[str]] = {}
    for name in sorted(pillar["site"]["guests"]):
        out.setdefault(guest_view(pillar, name)["profile"], []).append(name)
    return out
