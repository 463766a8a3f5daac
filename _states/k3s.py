"""
k3s as states: a set of manifests applied and pruned, rollouts waited for, the node token and the
join token kept in Vault, and Vault's Kubernetes auth pointed at the cluster.

Everything goes through the ``k3s`` execution module (the Kubernetes API, server-side apply with a
field manager); ``kubectl`` is never run.

.. code-block:: yaml

    k3s-apps-chat-applied:
      k3s.manifests_applied:
        - name: app-chat                 # the set: every object gets the label salt-platform/set=app-chat
        - manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: chat}}, ...]

    k3s-apps-chat-rolled-out:
      k3s.rollout_complete:
        - name: chat
        - namespace: chat
        - timeout: 300
"""

import difflib
import os
import tempfile

import yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "k3s"

MANAGED_BY = ("app.kubernetes.io/managed-by", "salt-platform")
SET_LABEL = "salt-platform/set"
# What a set may hold, so what pruning looks for even when the site no longer names any of a kind.
PRUNE_KINDS = (
    ("networking.k8s.io/v1", "Ingress"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("v1", "ConfigMap"),
    ("external-secrets.io/v1", "ExternalSecret"), ("external-secrets.io/v1", "ClusterSecretStore"),
    ("helm.cattle.io/v1", "HelmChart"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("v1", "Secret"), ("v1", "ServiceAccount"),
    ("v1", "Namespace"),
)


def __virtual__():
    if "k3s.apply" not in __salt__:
        return False, "the k3s execution module is not available"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _ident(obj):
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
    return f"{obj.get('kind')} {where}"


def _key(obj):
    meta = obj.get("metadata") or {}
    return (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace") or None, meta.get("name"))


def _labelled(manifest, name):
    out = yaml.safe_load(yaml.safe_dump(manifest))
    labels = out.setdefault("metadata", {}).setdefault("labels", {}) or {}
    labels.update({MANAGED_BY[0]: MANAGED_BY[1], SET_LABEL: name})
    out["metadata"]["labels"] = labels
    return out


def _shown(obj):
    """``obj`` as YAML for a diff; a Secret's values are never shown."""
    if obj is None:
        return []
    if obj.get("kind") == "Secret":
        obj = {**obj, **{k: {f: "(hidden)" for f in obj[k]} for k in ("data", "stringData") if obj.get(k)}}
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).splitlines(True)


def _diff(live, declared):
    return "".join(difflib.unified_diff(_shown(live), _shown(declared), "live", "declared"))


def _plan(manifest, field_manager):
    """``(change, needs_apply)`` of one labelled manifest: ``change`` is None when nothing differs."""
    api_version, kind, namespace, name = _key(manifest)
    if __salt__["k3s.resource"](api_version, kind) is None:
        return {"old": None, "new": f"created (the API server does not serve {kind} {api_version} yet)"}, True
    try:
        live, would_be = __salt__["k3s.planned"](manifest, field_manager=field_manager)
    except CommandExecutionError:
        live = __salt__["k3s.get"](api_version, kind, name, namespace)
        if live is not None:
            raise
        # A dry run cannot create inside a namespace that this set creates first.
        return {"old": None, "new": "created"}, True
    if live is None:
        return {"old": None, "new": "created"}, True
    if live == would_be:
        return None, False
    return {"diff": _diff(live, would_be)}, True


def _applied_by(obj, field_manager):
    return any(entry.get("manager") == field_manager and entry.get("operation") == "Apply"
               for entry in (obj.get("metadata") or {}).get("managedFields") or [])


def _strays(name, declared, kinds, field_manager):
    """Objects labelled as members of set ``name``, applied by ``field_manager``, that ``declared`` no
    longer names. An object that only carries the label (a Secret an operator wrote from an
    ExternalSecret's labels) was never applied by the set and is left alone."""
    found = []
    for api_version, kind in kinds:
        for obj in __salt__["k3s.list"](api_version, kind, label_selector=f"{SET_LABEL}={name}"):
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            if _key(obj) not in declared and _applied_by(obj, field_manager):
                found.append(obj)
    return found


def manifests_applied(name, manifests, field_manager="salt-platform", prune=True, prune_kinds=None):
    """
    The set ``name`` is exactly ``manifests``: each object applied server-side by ``field_manager``
    (labelled ``salt-platform/set: <name>``), and, with ``prune``, every object that carries the
    label but is no longer declared deleted. ``changes`` shows, per object, ``created``, a unified
    diff of the live object against what the apply makes of it (a person's edit of a declared field
    shows here and is put back), or ``deleted``.
    """
    ret = __utils__["platform_state.new"](name)
    labelled = sorted((_labelled(m, name) for m in manifests or []), key=__salt__["k3s.sort_key"])
    declared = {_key(m) for m in labelled}
    kinds = [tuple(k) for k in prune_kinds] if prune_kinds else list(PRUNE_KINDS)
    kinds += [(a, k) for a, k, _, _ in declared if (a, k) not in kinds]
    changes, to_apply = {}, []
    try:
        for manifest in labelled:
            change, needed = _plan(manifest, field_manager)
            if change:
                changes[_ident(manifest)] = change
            if needed:
                to_apply.append(manifest)
        strays = _strays(name, declared, kinds, field_manager) if prune else []
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"manifest set {name}: {exc}")
    for obj in strays:
        changes[_ident(obj)] = {"old": "present", "new": "deleted"}
    strays.sort(key=__salt__["k3s.sort_key"], reverse=True)

    def apply():
        for manifest in to_apply:
            try:
                __salt__["k3s.apply"](manifest, field_manager=field_manager)
            except CommandExecutionError as exc:
                raise CommandExecutionError(f"{_ident(manifest)}: {exc}") from None
        for obj in strays:
            api_version, kind, namespace, obj_name = _key(obj)
            __salt__["k3s.delete"](api_version, kind, obj_name, namespace)

    counts = {word: sum(1 for c in changes.values() if c.get("new", "").startswith(word))
              for word in ("created", "deleted")}
    summary = (f"{counts['created']} created, {len(changes) - counts['created'] - counts['deleted']} updated, "
               f"{counts['deleted']} deleted")
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"manifest set {name}: {len(labelled)} object(s) as declared",
        planned=f"manifest set {name} would change: {summary}",
        apply=apply,
        done=f"manifest set {name}: {summary}",
        failure=f"manifest set {name}: ",
    )


def rollout_complete(name, namespace, kind="Deployment", api_version="apps/v1", timeout=300, interval=2):
    """
    The rollout of ``kind`` ``namespace/name`` is complete, waiting at most ``timeout`` seconds. A
    rollout still going after that, or past its progress deadline, fails the state with the reason.
    Waiting changes nothing, so the state never reports changes; in test mode it does not wait.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        if __opts__["test"]:
            status = __salt__["k3s.rollout_status"](name, namespace, kind=kind, api_version=api_version)
            if not status["done"]:
                ret["result"] = None
                ret["comment"] = f"{status['message']}; would wait up to {timeout} s"
                return ret
        else:
            status = __salt__["k3s.wait_rollout"](name, namespace, kind=kind, api_version=api_version,
                                                  timeout=timeout, interval=interval)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    if not status["done"]:
        why = "failed" if status.get("failed") else f"not complete after {timeout} s"
        return __utils__["platform_state.failed"](ret, f"rollout {why}: {status['message']}")
    ret["comment"] = status["message"]
    return ret


def _vault_field(path, field, mount):
    """The current value of a KV v2 field, or None when the secret or field is absent."""
    current = __salt__["vault_server.secret_version"](path, mount=mount)
    if not current or field not in current.get("fields", []):
        return None
    return __salt__["vault_server.secret_read"](path, field, mount=mount)


def node_token_stored(name, mount="secret", field="token"):
    """
    The server's node token is in Vault at ``<mount>/data/<name>`` (field ``field``), where agents
    and nothing else read it (policy). The token is read inside the state and never shown.
    """
    ret = __utils__["platform_state.new"](name)
    where = f"{mount}/data/{name}"
    try:
        token = __salt__["k3s.node_token"]()
        stored = _vault_field(name, field, mount)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    changes = {} if stored == token else {field: {"old": None if stored is None else "(another value)",
                                                   "new": "(the server's node token)"}}
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{where} holds the server's node token",
        planned=f"the node token would be written to {where}",
        apply=lambda: __salt__["vault_server.write"](where, {"data": {field: token}}),
        done=f"the node token written to {where}",
        failure=f"{where}: ",
    )


def service_account_token_stored(name, secret, namespace="kube-system", mount="secret"):
    """
    The long-lived token of a service account (its ``kubernetes.io/service-account-token`` Secret
    ``namespace/secret``, filled by the cluster's token controller) and the cluster's CA certificate
    are in Vault at ``<mount>/data/<name>`` (fields ``token`` and ``ca``), for a guest outside the
    cluster that authenticates as that account: Prometheus scraping the kubelets
    (``roles/monitoring/kubelet``). Read inside the state; the token is never shown.
    """
    ret = __utils__["platform_state.new"](name)
    where = f"{mount}/data/{name}"
    try:
        found = __salt__["k3s.reviewer_credentials"](secret, namespace)
        stored = {field: _vault_field(name, field, mount) for field in ("token", "ca")}
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"the token of {namespace}/{secret}: {exc}")
    wanted = {"token": found["jwt"], "ca": found["ca"]}
    changes = {}
    if stored["token"] != wanted["token"]:
        changes["token"] = {"old": None if stored["token"] is None else "(another value)",
                            "new": f"(the token of {namespace}/{secret})"}
    if stored["ca"] != wanted["ca"]:
        changes["ca"] = {"old": None if stored["ca"] is None else "(another certificate)",
                         "new": "(the cluster's CA certificate)"}
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{where} holds the token of {namespace}/{secret} and the cluster's CA",
        planned=f"the token of {namespace}/{secret} would be written to {where}",
        apply=lambda: __salt__["vault_server.write"](where, {"data": wanted}),
        done=f"the token of {namespace}/{secret} written to {where}",
        failure=f"{where}: ",
    )


def join_token_file(name, vault_path, mount="secret", field="token"):
    """
    The file ``name`` (root only, 0600) holds the join token from ``<mount>/data/<vault_path>``:
    an agent's ``token-file``. Read from Vault inside the state; the value is never shown.
    """
    ret = __utils__["platform_state.new"](name)
    where = f"{mount}/data/{vault_path}"
    try:
        token = _vault_field(vault_path, field, mount)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    if token is None:
        return __utils__["platform_state.failed"](
            ret, f"{where} has no field {field}: the k3s server stores its node token there first")
    try:
        with open(name, encoding="utf-8") as fh:
            current = fh.read().strip()
        mode = os.stat(name).st_mode & 0o777
    except FileNotFoundError:
        current, mode = None, None
    changes = {}
    if current != token:
        changes["token"] = {"old": None if current is None else "(another value)", "new": f"(from {where})"}
    if mode not in (None, 0o600):
        changes["mode"] = {"old": oct(mode), "new": "0o600"}

    def write():
        directory = os.path.dirname(name)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".token-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, name)
        except OSError as exc:
            raise CommandExecutionError(f"cannot write {name}: {exc}") from None

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{name} holds the join token from {where}",
        planned=f"{name} would be written from {where}",
        apply=write,
        done=f"{name} written from {where}",
    )


def vault_auth_configured(name, kubernetes_host, reviewer_secret="vault-token-reviewer",  # noqa: S107
                          reviewer_namespace="kube-system", url=None, verify=None, **params):
    """
    Vault's Kubernetes auth method mounted at ``name`` is configured for this cluster: its API
    address, its CA certificate and the token reviewer's JWT, both read from the cluster (the
    service-account token Secret ``reviewer_namespace/reviewer_secret``) inside the state, handed to
    ``vault_server.kubernetes_config_present`` and never shown.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        reviewer = __salt__["k3s.reviewer_credentials"](reviewer_secret, reviewer_namespace)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"the token reviewer of {name}: {exc}")
    wanted = {k: v for k, v in params.items() if not k.startswith("__")}
    return __states__["vault_server.kubernetes_config_present"](
        name, url=url, verify=verify, kubernetes_host=kubernetes_host, kubernetes_ca_cert=reviewer["ca"],
        token_reviewer_jwt=reviewer["jwt"], disable_local_ca_jwt=True, **wanted)


def vault_ca_published(name, namespace, ca_file=None, field_manager="salt-platform"):
    """
    The ConfigMap ``namespace/name`` holds Vault's CA certificate (``ca.crt``), which the apps'
    ClusterSecretStores trust: read from ``ca_file``, else from the Vault server settings the master
    hands this minion (saltext-vault's ``verify``). A public certificate, shown in diffs.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        if ca_file:
            with open(ca_file, encoding="utf-8") as fh:
                pem = fh.read()
        else:
            verify = (__salt__["vault.get_server_config"]() or {}).get("verify")
            if not isinstance(verify, str) or "BEGIN CERTIFICATE" not in verify:
                with open(verify, encoding="utf-8") as fh:
                    pem = fh.read()
            else:
                pem = verify
    except (OSError, TypeError, KeyError, CommandExecutionError) as exc:
        return __utils__["platform_state.failed"](ret, f"Vault's CA certificate for {namespace}/{name}: {exc}")
    if "BEGIN CERTIFICATE" not in pem:
        return __utils__["platform_state.failed"](ret, f"Vault's CA certificate for {namespace}/{name}: not a PEM "
                                                       f"certificate")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                 "data": {"ca.crt": pem}}
    return manifests_applied(name, [configmap], field_manager=field_manager, prune=False)
