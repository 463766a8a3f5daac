"""
k3s through the Kubernetes API: cluster facts, the node token, server-side apply, rollouts, pruning.

Every call goes to the API server over HTTPS with the requests library; nothing runs ``kubectl``.
Connection, from the minion config key ``k3s`` (defaults: the k3s server's own files, so on the
k3s guest nothing needs configuring and the admin credentials never leave it):

.. code-block:: yaml

    k3s:
      url: https://127.0.0.1:6443
      ca_file: /var/lib/rancher/k3s/server/tls/server-ca.crt
      client_cert: /var/lib/rancher/k3s/server/tls/client-admin.crt
      client_key: /var/lib/rancher/k3s/server/tls/client-admin.key
      token_file: null        # a bearer token file instead of the client certificate
      node_token_file: /var/lib/rancher/k3s/server/node-token
      timeout: 30

Manifests are applied with **server-side apply** (``PATCH`` with
``application/apply-patch+yaml``, a ``fieldManager``, ``force=true``): the API server merges
and records which manager owns which field. What an apply would change is found the way
``kubectl diff`` finds it: the same apply with ``dryRun=All``, compared with the live object
(server-managed metadata and ``status`` left out). A second apply of the same manifest returns
the same object, and a field a person changed comes back as a difference.

Functions return plain data and raise ``CommandExecutionError`` with the API server's own
``Status`` message. Only ``node_token`` and ``reviewer_credentials`` return secrets, for a state
to store in Vault; they are never logged.
"""

import base64
import copy
import logging
import time

from salt.exceptions import CommandExecutionError

try:
    import requests
    import yaml

    HAS_LIBS = True
except ImportError:
    HAS_LIBS = False

log = logging.getLogger(__name__)

__virtualname__ = "k3s"
__func_alias__ = {"list_": "list"}

DEFAULTS = {
    "url": "https://127.0.0.1:6443",
    "ca_file": "/var/lib/rancher/k3s/server/tls/server-ca.crt",
    "client_cert": "/var/lib/rancher/k3s/server/tls/client-admin.crt",
    "client_key": "/var/lib/rancher/k3s/server/tls/client-admin.key",
    "token_file": None,
    "node_token_file": "/var/lib/rancher/k3s/server/node-token",
    "timeout": 30,
}
FIELD_MANAGER = "salt-platform"
# What the API server sets on every object; never part of a declared manifest or of a diff.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
                   "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
# Applied first (later objects live in them or use them), deleted last.
KIND_ORDER = ("CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
              "Role", "RoleBinding", "Secret", "ConfigMap", "HelmChart", "HelmChartConfig")

_discovery = {}


def __virtual__():
    if not HAS_LIBS:
        return False, "k3s needs the requests and PyYAML libraries"
    return __virtualname__


def _conf():
    conf = dict(DEFAULTS)
    conf.update(__salt__["config.get"]("k3s", {}) or {})
    return conf


def _session():
    conf = _conf()
    session = requests.Session()
    session.verify = conf["ca_file"] if conf["url"].startswith("https") and conf["ca_file"] else True
    if conf["token_file"]:
        try:
            with open(conf["token_file"], encoding="utf-8") as fh:
                session.headers["Authorization"] = f"Bearer {fh.read().strip()}"
        except OSError as exc:
            raise CommandExecutionError(f"cannot read the token file {conf['token_file']}: {exc}") from exc
    elif conf["client_cert"] and conf["url"].startswith("https"):
        session.cert = (conf["client_cert"], conf["client_key"])
    return conf, session


def _request(method, path, expect=(200, 201), **kwargs):
    """One API call; the decoded reply, None for a 404 when 404 is expected."""
    conf, session = _session()
    url = conf["url"].rstrip("/") + path
    try:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override a session's own verify.
        reply = session.request(method, url, timeout=conf["timeout"], verify=session.verify, **kwargs)
    except requests.exceptions.RequestException as exc:
        raise CommandExecutionError(f"{method} {path}: the API server at {conf['url']} is unreachable "
                                    f"({type(exc).__name__}: {exc})") from None
    finally:
        session.close()
    if reply.status_code == 404 and 404 in expect:
        return None
    if reply.status_code not in expect:
        raise CommandExecutionError(f"{method} {path}: {reply.status_code} {_status_message(reply)}")
    return reply.json() if reply.content else {}


def _status_message(reply):
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:300]
    return body.get("message") or body.get("reason") or str(body)[:300]


# -- facts -------------------------------------------------------------------------------------------

def version():
    """The API server's version (``gitVersion``, such as ``v1.33.5+k3s1``)."""
    return _request("GET", "/version")["gitVersion"]


def nodes():
    """The nodes: name -> {ready, roles, kubelet, internal_ip}."""
    out = {}
    for node in _request("GET", "/api/v1/nodes").get("items", []):
        meta, status = node["metadata"], node.get("status", {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
        roles = sorted(label.split("/", 1)[1] for label in meta.get("labels", {})
                       if label.startswith("node-role.kubernetes.io/"))
        addresses = {a["type"]: a["address"] for a in status.get("addresses", [])}
        out[meta["name"]] = {"ready": ready, "roles": roles,
                             "kubelet": status.get("nodeInfo", {}).get("kubeletVersion"),
                             "internal_ip": addresses.get("InternalIP")}
    return out


def facts():
    """The cluster in one call: version, nodes, and whether every node is ready."""
    found = nodes()
    return {"version": version(), "nodes": found, "ready": bool(found) and all(n["ready"] for n in found.values())}


def node_token():
    """The server's node token (agents join with it). A secret: for a state to store in Vault."""
    path = _conf()["node_token_file"]
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise CommandExecutionError(f"cannot read the node token {path}: {exc}") from exc
    if not token:
        raise CommandExecutionError(f"the node token {path} is empty")
    return token


def reviewer_credentials(secret, namespace="kube-system"):
    """
    The JWT and CA certificate of the service-account token Secret ``secret`` (type
    ``kubernetes.io/service-account-token``): what Vault's Kubernetes auth needs to call the
    TokenReview API. A secret: for a state to hand to Vault, never to show.
    """
    found = get("v1", "Secret", secret, namespace)
    if found is None:
        raise CommandExecutionError(f"secret {namespace}/{secret} does not exist")
    data = found.get("data") or {}
    if not data.get("token") or not data.get("ca.crt"):
        raise CommandExecutionError(f"secret {namespace}/{secret} has no token or ca.crt yet (the token "
                                    f"controller fills a kubernetes.io/service-account-token secret)")
    return {"jwt": base64.b64decode(data["token"]).decode(), "ca": base64.b64decode(data["ca.crt"]).decode()}


# -- resources -----------------------------------------------------------------------------------------

def _group_path(api_version):
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def resource(api_version, kind):
    """``{plural, namespaced}`` of ``kind`` in ``api_version`` from the API's discovery, or None when the
    API server does not serve it (a CRD not installed yet)."""
    conf = _conf()
    key = (conf["url"], api_version)
    for attempt in (0, 1):
        if attempt or key not in _discovery:
            listing = _request("GET", _group_path(api_version), expect=(200, 404))
            _discovery[key] = {r["kind"]: {"plural": r["name"], "namespaced": bool(r.get("namespaced"))}
                               for r in (listing or {}).get("resources", []) if "/" not in r["name"]}
        if kind in _discovery[key]:
            return _discovery[key][kind]
    return None


def _object_path(api_version, kind, name=None, namespace=None):
    found = resource(api_version, kind)
    if found is None:
        raise CommandExecutionError(f"{kind} ({api_version}) is not served by the API server")
    path = _group_path(api_version)
    if found["namespaced"]:
        if not namespace:
            raise CommandExecutionError(f"{kind} {name} is namespaced: metadata.namespace is missing")
        path += f"/namespaces/{namespace}"
    path += f"/{found['plural']}"
    return f"{path}/{name}" if name else path


def get(api_version, kind, name, namespace=None):
    """The live object, or None."""
    return _request("GET", _object_path(api_version, kind, name, namespace), expect=(200, 404))


def list_(api_version, kind, namespace=None, label_selector=None):
    """The objects of a kind (in ``namespace``, or everywhere), filtered by ``label_selector``."""
    if resource(api_version, kind) is None:
        return []
    found = resource(api_version, kind)
    path = _group_path(api_version) + f"/{found['plural']}"
    if namespace and found["namespaced"]:
        path = _group_path(api_version) + f"/namespaces/{namespace}/{found['plural']}"
    params = {"labelSelector": label_selector} if label_selector else None
    return _request("GET", path, params=params).get("items", [])


def apply(manifest, field_manager=FIELD_MANAGER, dry_run=False, force=True):
    """Server-side apply of one object; returns the object as the API server has (or would have) it."""
    meta = manifest.get("metadata") or {}
    path = _object_path(manifest["apiVersion"], manifest["kind"], meta.get("name"), meta.get("namespace"))
    # Strict: a field the API does not know fails the apply instead of being dropped silently.
    params = {"fieldManager": field_manager, "force": "true" if force else "false", "fieldValidation": "Strict"}
    if dry_run:
        params["dryRun"] = "All"
    return _request("PATCH", path, params=params, data=yaml.safe_dump(manifest).encode(),
                    headers={"Content-Type": "application/apply-patch+yaml"})


def delete(api_version, kind, name, namespace=None):
    """Deletes an object (background propagation); False when it was already gone."""
    path = _object_path(api_version, kind, name, namespace)
    gone = _request("DELETE", path, expect=(200, 202, 404), json={"propagationPolicy": "Background"})
    return gone is not None


def comparable(obj):
    """``obj`` without what only the API server writes (server metadata, ``status``)."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if "annotations" in meta and not annotations:
        meta.pop("annotations")
    return out


def planned(manifest, field_manager=FIELD_MANAGER):
    """What applying ``manifest`` would change: ``(live, would_be)`` as comparable objects (``live`` None
    when the object does not exist). Asks the API server (``dryRun=All``), so its defaults, merge rules
    and the other managers' fields are the real ones."""
    meta = manifest.get("metadata") or {}
    live = get(manifest["apiVersion"], manifest["kind"], meta.get("name"), meta.get("namespace"))
    would_be = apply(manifest, field_manager=field_manager, dry_run=True)
    return comparable(live), comparable(would_be)


def sort_key(manifest):
    """Apply order: namespaces, accounts and configuration before what uses them."""
    kind = manifest.get("kind", "")
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), kind,
            (manifest.get("metadata") or {}).get("namespace") or "", (manifest.get("metadata") or {}).get("name"))


# -- rollouts ------------------------------------------------------------------------------------------

def rollout_status(name, namespace, kind="Deployment", api_version="apps/v1"):  # noqa: PLR0911
    """Whether the rollout of a Deployment, StatefulSet or DaemonSet is complete: ``{done, message}``,
    by the same rules as ``kubectl rollout status``."""
    obj = get(api_version, kind, name, namespace)
    if obj is None:
        return {"done": False, "message": f"{kind} {namespace}/{name} does not exist"}
    spec, status = obj.get("spec", {}), obj.get("status", {})
    where = f"{kind} {namespace}/{name}"
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return {"done": False, "message": f"{where}: waiting for the controller to observe the new spec"}
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated, available = status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0)
    else:
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", status.get("readyReplicas", 0))
        if kind == "Deployment":
            progressing = [c for c in status.get("conditions", []) if c.get("type") == "Progressing"]
            if progressing and progressing[0].get("reason") == "ProgressDeadlineExceeded":
                return {"done": False, "failed": True,
                        "message": f"{where}: progress deadline exceeded ({progressing[0].get('message', '')})"}
            if status.get("replicas", 0) > updated:
                return {"done": False, "message": f"{where}: {status.get('replicas', 0) - updated} old "
                                                  f"replica(s) pending termination"}
    if updated < want:
        return {"done": False, "message": f"{where}: {updated} of {want} replica(s) updated"}
    if available < want:
        return {"done": False, "message": f"{where}: {available} of {want} updated replica(s) available"}
    return {"done": True, "message": f"{where}: rolled out ({want} replica(s) available)"}


def wait_rollout(name, namespace, kind="Deployment", api_version="apps/v1", timeout=300, interval=2):
    """Waits at most ``timeout`` seconds for ``rollout_status`` to be done; returns the last status. An
    API server that does not answer yet (k3s just started) is waited for too, within the same time."""
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            status = rollout_status(name, namespace, kind=kind, api_version=api_version)
        except CommandExecutionError as exc:
            if time.monotonic() >= deadline:
                raise
            status = {"done": False, "message": str(exc)}
        if status["done"] or status.get("failed") or time.monotonic() >= deadline:
            return status
        time.sleep(min(float(interval), max(0.0, deadline - time.monotonic())))
