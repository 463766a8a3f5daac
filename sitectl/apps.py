"""The owner's apps on k3s, derived from the site in one place: the k3s guests (the server and its
agents), each app's facts (namespace, Vault role and policy, the credentials it reads), the proxy
route of each app, and the Kubernetes manifests the k3s role applies (``salt/k3s``), set by set.

Vault's side (the Kubernetes auth roles and the policies) and the reverse proxy's (one route per
app with a ``route``) read the same derivation through the ``platform`` ext_pillar
(``platform:apps``, ``platform:k3s``, ``platform:edge``), so nothing restates the site.

No secret is in a manifest: an app's database and broker passwords reach its pods through an
ExternalSecret that External Secrets Operator fills from Vault, logging in with Vault's Kubernetes
auth as the app's own service account (a Vault role per app namespace, a policy for exactly the
paths that app may read).
"""

from __future__ import annotations

import re

from sitectl import roles as roles_of

# Namespaces k3s and the platform keep for themselves.
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
MANAGED_BY = "salt-platform"


def k3s_guests(site: dict) -> tuple[str | None, list[str]]:
    """(server, agents): the first guest with the role k3s, by name, serves; the others join it."""
    guests = roles_of.guests_with_role(site, "k3s")
    return (guests[0] if guests else None), guests[1:]


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def app_facts(pillar: dict) -> dict[str, dict]:
    """``app -> facts``: kind, image, replicas, port, resources, namespace, the service account ESO logs
    in as, the Vault role and policy, the ClusterSecretStore, the credentials (database and broker user
    passwords, with their non-secret connection settings) and the public host name of its route."""
    site = pillar["site"]
    params = roles_of.parameters(pillar, "k3s")
    pg_users = roles_of.parameters(pillar, "postgresql")["vault"]["users_path"]
    mq_users = roles_of.parameters(pillar, "rabbitmq")["users_path"]
    databases = roles_of.databases(site)
    pg_server = (roles_of.guests_with_role(site, "postgresql") or [None])[0]
    mq_server = (roles_of.guests_with_role(site, "rabbitmq") or [None])[0]
    pg_port = roles_of.ports(pillar["roles"], "postgresql").get("postgresql")
    mq_port = roles_of.ports(pillar["roles"], "rabbitmq").get("amqp")
    users = ((site.get("messaging") or {}).get("users") or {})
    out = {}
    for name, app in sorted((site.get("apps") or {}).items()):
        credentials = []
        for db in app.get("databases", []):
            owner = databases[db]["owner"]
            credentials.append({
                "kind": "postgresql", "name": db, "env": f"PG_{_env_name(db)}", "vault_path": f"{pg_users}/{owner}",
                "settings": {"HOST": roles_of.ip(site["guests"][pg_server]), "PORT": pg_port, "USER": owner,
                             "NAME": db}})
        for user in app.get("broker_users", []):
            vhosts = sorted(users[user].get("permissions", {}))
            credentials.append({
                "kind": "rabbitmq", "name": user, "env": f"AMQP_{_env_name(user)}", "vault_path": f"{mq_users}/{user}",
                "settings": {"HOST": roles_of.ip(site["guests"][mq_server]), "PORT": mq_port, "USER": user,
                             "VHOST": vhosts[0] if vhosts else "/"}})
        out[name] = {
            "kind": app["kind"],
            "image": app["image"],
            "replicas": app.get("replicas", params["app_defaults"]["replicas"]),
            "port": app["port"],
            "health_path": app.get("health_path"),
            "resources": roles_of.merge(params["app_defaults"]["resources"], app.get("resources")),
            "namespace": name,
            "service_account": f"{name}-vault",
            "vault_role": f"app-{name}",
            "policy": f"k3s_app_{name.replace('-', '_')}",
            "store": f"vault-{name}",
            "credentials": credentials,
            "own_secrets": f"apps/{name}",
            "route": app.get("route"),
            "fqdn": f"{app['route']}.{site['domain']}" if app.get("route") else None,
        }
    return out


def app_routes(pillar: dict) -> dict[str, dict]:
    """The proxy's route of each app with a ``route``: to Traefik on the k3s server (the catalog's
    ``ingress-http`` port), which picks the app by host name."""
    server, _ = k3s_guests(pillar["site"])
    port = roles_of.ports(pillar["roles"], "k3s").get("ingress-http")
    if server is None or port is None:
        return {}
    return {app["route"]: {"guest": server, "port": int(port), "health_path": app.get("health_path") or "/"}
            for app in (pillar["site"].get("apps") or {}).values() if app.get("route")}


def site_with_app_routes(pillar: dict) -> dict:
    """The site with the apps' routes added to ``routes`` (what the proxy serves)."""
    return {**pillar["site"], "routes": {**(pillar["site"].get("routes") or {}), **app_routes(pillar)}}


# -- manifests ------------------------------------------------------------------------------------

def _labels(app: str) -> dict:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "platform-apps"}


def system_manifests(pillar: dict) -> list[dict]:
    """The cluster's own set: the kubelet scraper of the site's Prometheus (``kubelet_scraper_manifests``),
    the token reviewer Vault's Kubernetes auth calls TokenReview with (a service account, its long-lived
    token Secret, system:auth-delegator), and External Secrets Operator from its Helm chart at the
    pinned version through k3s's HelmChart resource."""
    params = roles_of.parameters(pillar, "k3s")
    auth, eso = params["vault_auth"], params["eso"]
    reviewer_ns = auth["reviewer_namespace"]
    return [*kubelet_scraper_manifests(pillar),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": eso["namespace"]}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": auth["reviewer"], "namespace": reviewer_ns}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": auth["reviewer"], "namespace": reviewer_ns,
                      "annotations": {"kubernetes.io/service-account.name": auth["reviewer"]}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{auth['reviewer']}-auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
         "subjects": [{"kind": "ServiceAccount", "name": auth["reviewer"], "namespace": reviewer_ns}]},
        {"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
         "metadata": {"name": eso["chart"], "namespace": "kube-system"},
         "spec": {"repo": eso["repo"], "chart": eso["chart"], "version": eso["chart_version"],
                  "targetNamespace": eso["namespace"],
                  "valuesContent": "installCRDs: true\n"}},
    ]


def kubelet_scraper(pillar: dict) -> dict | None:
    """The service account the site's Prometheus scrapes the kubelets as (``monitoring:kubelet``), or
    None when no guest has the monitoring role."""
    if not roles_of.guests_with_role(pillar["site"], "monitoring"):
        return None
    return dict(roles_of.parameters(pillar, "monitoring")["kubelet"])


def kubelet_scraper_manifests(pillar: dict) -> list[dict]:
    """The scraper's account, its long-lived token Secret, and read access to ``nodes/metrics`` (what
    a kubelet's webhook authorisation asks for ``/metrics`` and ``/metrics/cadvisor``), nothing else."""
    scraper = kubelet_scraper(pillar)
    if scraper is None:
        return []
    name, ns = scraper["service_account"], scraper["namespace"]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": name, "namespace": ns, "annotations": {"kubernetes.io/service-account.name": name}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
    ]


def app_manifests(pillar: dict, name: str, app: dict, vault_url: str) -> list[dict]:
    """One app's set: namespace, the service account ESO logs in to Vault as, a ClusterSecretStore only
    that namespace may use (Kubernetes auth, the app's Vault role), the ExternalSecret with its
    credentials, the Deployment, the Service, and the Ingress on Traefik when it has a route."""
    params = roles_of.parameters(pillar, "k3s")
    ns, labels = app["namespace"], _labels(name)
    out = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}]
    env: list[dict] = []
    secret = f"{name}-credentials"
    if app["credentials"]:
        out += [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": app["service_account"], "namespace": ns, "labels": labels}},
            {"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
             "metadata": {"name": app["store"], "labels": labels},
             "spec": {"conditions": [{"namespaces": [ns]}],
                      "provider": {"vault": {
                          "server": vault_url, "path": roles_of.parameters(pillar, "vault")["secrets_mount"],
                          "version": "v2",
                          "caProvider": {"type": "ConfigMap", "name": "vault-ca", "key": "ca.crt",
                                         "namespace": params["eso"]["namespace"]},
                          "auth": {"kubernetes": {"mountPath": params["vault_auth"]["mount"],
                                                  "role": app["vault_role"],
                                                  "serviceAccountRef": {"name": app["service_account"],
                                                                        "namespace": ns}}}}}}},
            {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
             "metadata": {"name": secret, "namespace": ns, "labels": labels},
             "spec": {"refreshInterval": params["eso"]["refresh_interval"],
                      "secretStoreRef": {"kind": "ClusterSecretStore", "name": app["store"]},
                      "target": {"name": secret, "creationPolicy": "Owner"},
                      "data": [{"secretKey": f"{c['env']}_PASSWORD",
                                "remoteRef": {"key": c["vault_path"], "property": "password"}}
                               for c in app["credentials"]]}},
        ]
        for c in app["credentials"]:
            env += [{"name": f"{c['env']}_{key}", "value": str(value)} for key, value in c["settings"].items()]
            env.append({"name": f"{c['env']}_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": f"{c['env']}_PASSWORD"}}})
    container = {"name": name, "image": app["image"], "ports": [{"name": "http", "containerPort": app["port"]}],
                 "resources": app["resources"],
                 "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                     "capabilities": {"drop": ["ALL"]}}}
    if env:
        container["env"] = env
    if app["health_path"]:
        probe = {"httpGet": {"path": app["health_path"], "port": "http"}, "periodSeconds": 10}
        container["readinessProbe"] = probe
        container["livenessProbe"] = {**probe, "initialDelaySeconds": 10}
    out += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": labels},
         "spec": {"replicas": app["replicas"], "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"automountServiceAccountToken": False, "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
         "spec": {"selector": {"app.kubernetes.io/name": name},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]
    if app["fqdn"]:
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         # TLS ends at the reverse proxy; Traefik serves plain HTTP inside the network.
                         "annotations": {"traefik.ingress.kubernetes.io/router.entrypoints": "web"}},
            "spec": {"ingressClassName": "traefik",
                     "rules": [{"host": app["fqdn"], "http": {"paths": [{
                         "path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": name, "port": {"name": "http"}}}}]}}]}})
    return out


def cluster(pillar: dict) -> dict | None:
    """What the k3s guests need: the server, its agents, the API's address, the Vault URL the cluster
    reaches, the manifest sets (``platform-system`` and one ``app-<name>`` per app), and the service
    account the site's Prometheus scrapes the kubelets as (None without a monitoring guest). None when
    the site has no k3s guest."""
    site = pillar["site"]
    server, agents = k3s_guests(site)
    if server is None:
        return None
    api_port = roles_of.ports(pillar["roles"], "k3s").get("kubernetes-api")
    vaults = roles_of.guests_with_role(site, "vault")
    vault_port = roles_of.ports(pillar["roles"], "vault").get("vault-api")
    vault_url = f"https://{roles_of.ip(site['guests'][vaults[0]])}:{vault_port}" if vaults else None
    apps = app_facts(pillar)
    sets = {"platform-system": system_manifests(pillar)}
    sets.update({f"app-{name}": app_manifests(pillar, name, app, vault_url) for name, app in apps.items()})
    return {"server": server, "server_ip": roles_of.ip(site["guests"][server]), "agents": agents,
            "api_url": f"https://{roles_of.ip(site['guests'][server])}:{api_port}", "vault_url": vault_url,
            "sets": sets, "kubelet_scraper": kubelet_scraper(pillar),
            "rollouts": [{"name": name, "namespace": app["namespace"]} for name, app in apps.items()
                         if app["replicas"]]}


# -- validation -----------------------------------------------------------------------------------

def _credential_errors(where: str, names: list, declared: dict, what: str, section: str, server: str) -> list[str]:
    errors = []
    for i, item in enumerate(names):
        if item not in declared:
            errors.append(f"{where}[{i}]: no {what} named {item!r} in {section}; expected one of: "
                          f"{', '.join(sorted(declared)) or '(none declared)'}")
        elif server not in declared[item].get("clients", []):
            errors.append(f"{where}[{i}]: {section}.{item}.clients does not list the k3s guest {server}, so the "
                          f"{what} refuses the app's connections; expected {server} in {section}.{item}.clients")
    return errors


def errors(pillar: dict) -> list[str]:
    """site.apps: a k3s guest to run them, the databases and broker users they name declared (with the
    k3s guest among their clients), routes that are free, namespaces that are not the system's."""
    site = pillar["site"]
    apps = site.get("apps") or {}
    if not apps:
        return []
    server, _ = k3s_guests(site)
    if server is None:
        return ["site.apps: apps are declared but no guest has the role k3s; expected a guest with the role k3s "
                "to run them"]
    out = []
    eso_ns = roles_of.parameters(pillar, "k3s")["eso"]["namespace"]
    reserved = (*RESERVED_NAMESPACES, eso_ns)
    routes = site.get("routes") or {}
    taken: dict[str, str] = {}
    databases = site.get("databases") or {}
    users = (site.get("messaging") or {}).get("users") or {}
    for name, app in sorted(apps.items()):
        where = f"site.apps.{name}"
        if name in reserved or name.startswith("kube-"):
            out.append(f"{where}: the namespace {name!r} is the cluster's own; expected another app name "
                       f"(reserved: {', '.join(reserved)}, kube-*)")
        if app["kind"] == "angular" and (app.get("databases") or app.get("broker_users")):
            out.append(f"{where}.kind: an angular app runs in the browser and cannot hold database or broker "
                       f"credentials; expected no databases or broker_users (give them to its backend)")
        out += _credential_errors(f"{where}.databases", app.get("databases", []), databases, "database",
                                  "site.databases", server)
        out += _credential_errors(f"{where}.broker_users", app.get("broker_users", []), users, "broker user",
                                  "site.messaging.users", server)
        route = app.get("route")
        if route in routes:
            out.append(f"{where}.route: {route!r} is already site.routes.{route}; expected a subdomain no other "
                       f"route serves")
        elif route in taken:
            out.append(f"{where}.route: {route!r} is already the route of site.apps.{taken[route]}; expected a "
                       f"subdomain no other route serves")
        elif route:
            taken[route] = name
    if taken and not roles_of.guests_with_role(site, "reverse_proxy"):
        out.append("site.apps: apps have routes but no guest has the role reverse_proxy; expected a guest with the "
                   "role reverse_proxy to serve them")
    if taken and not site.get("acme"):
        out.append("site.acme: missing; the apps' routes are served over HTTPS with certificates from an ACME "
                   "directory: expected site.acme with directory and email")
    return out
