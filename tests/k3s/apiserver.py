"""A Kubernetes API double over real HTTPS, for the k3s modules and Vault's Kubernetes auth.

It is **not a cluster**: no scheduler, no controllers, no kubelet. It is kmock's
``KubernetesScaffold`` (API and resource discovery from a k3s server's published resource list,
Kubernetes ``Status`` errors) with an object store of its own that follows the API's documented
rules where the project's modules depend on them:

- server-side apply (``PATCH`` ``application/apply-patch+yaml``): ``fieldManager`` required, the
  object created when absent, field ownership per manager (``metadata.managedFields``), a conflict
  (409) when another manager owns a field with another value unless ``force=true``, fields the
  manager applied before and no longer applies removed, ``dryRun=All`` answering without storing,
  ``resourceVersion`` bumped only by a real change, ``generation`` only by a change of ``spec``,
  API defaults on Deployments and Services (so a module that compared its manifest with the live
  object would see differences that are not there);
- merge patches (``application/merge-patch+json``, as ``kubectl edit`` sends) take the fields they
  set for their manager;
- a TokenReview (``POST /apis/authentication.k8s.io/v1/tokenreviews``) authorised by the reviewer's
  bearer token, checking the RS256 signature, expiry and audience of tokens this double issued.

Lists are atomic (replaced whole), where the real API merges some by key (containers by name): the
modules apply whole objects, so the difference does not reach them. Rollouts are driven by the test
(``set_status``), as a controller would.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import ipaddress
import itertools
import json
import ssl
import threading
import time
import uuid
from pathlib import Path

import aiohttp.web
import kmock
import yaml
from aiohttp.test_utils import RawTestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation")
IDENTITY = (("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"))
# Custom resources a k3s server with External Secrets Operator serves (k3s ships the HelmChart CRD).
CUSTOM_RESOURCES = {
    "helm.cattle.io/v1/helmcharts": {"kind": "HelmChart", "namespaced": True},
    "helm.cattle.io/v1/helmchartconfigs": {"kind": "HelmChartConfig", "namespaced": True},
    "external-secrets.io/v1/externalsecrets": {"kind": "ExternalSecret", "namespaced": True},
    "external-secrets.io/v1/clustersecretstores": {"kind": "ClusterSecretStore", "namespaced": False},
    "external-secrets.io/v1/secretstores": {"kind": "SecretStore", "namespaced": True},
}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _paths(node, prefix=()):
    """The leaf paths of an applied configuration (mappings descend, lists are atomic)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    else:
        yield prefix


def _lookup(obj, path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return KeyError
        obj = obj[key]
    return obj


def _assign(obj, path, value):
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj, path):
    parents = []
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            return
        parents.append((obj, key))
        obj = obj[key]
    obj.pop(path[-1], None)
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]


def _merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _comparable(obj):
    out = copy.deepcopy(obj)
    for key in SERVER_METADATA:
        out.get("metadata", {}).pop(key, None)
    out.pop("status", None)
    return out


def _defaults(obj):
    """What the API server fills in when a manifest leaves it out (a few of its real defaults)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if obj.get("kind") == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    elif obj.get("kind") == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("clusterIP", f"10.43.0.{abs(hash(obj['metadata']['name'])) % 200 + 10}")


def _fields_v1(paths):
    tree: dict = {}
    for path in paths:
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


class TLS:
    """A CA and a server certificate for 127.0.0.1 (IP SAN), in ``workdir``."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s-double-server-ca")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_file = workdir / "server-ca.crt"
        self.ca_file.write_text(self.ca_pem)
        cert_file, key_file = workdir / "server.crt", workdir / "server.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)


class ApiServer(kmock.KubernetesScaffold):
    """The double's request handler (see the module's docstring); one store, guarded by a lock."""

    def __init__(self, admin_token: str, **kwargs):
        super().__init__(**kwargs)
        self.admin_token = admin_token
        self.lock = threading.Lock()
        self.store: dict[tuple, dict] = {}
        self.owners: dict[tuple, dict[str, set]] = {}
        self.versions = itertools.count(1000)
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.reviewer_tokens: set[str] = set()
        self.reviews: list[dict] = []
        self.review_results: list[dict] = []
        self.resources.load_bundled()
        for key, info in CUSTOM_RESOURCES.items():
            self.resources[key] = {"kind": info["kind"], "namespaced": info["namespaced"],
                                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}

    async def _serve_server_version(self, request):
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.5+k3s1", "platform": "linux/amd64"}

    # -- what the test drives ----------------------------------------------------------------------

    def key_of(self, api_version: str, plural: str, namespace: str | None, name: str) -> tuple:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        return (group, plural, namespace, name)

    def object(self, api_version, plural, namespace, name) -> dict | None:
        with self.lock:
            found = self.store.get(self.key_of(api_version, plural, namespace, name))
            return copy.deepcopy(found)

    def edit(self, api_version, plural, namespace, name, patch: dict, manager: str = "kubectl-edit") -> None:
        """A person's edit (as ``kubectl edit`` sends it: a merge patch under its own manager)."""
        with self.lock:
            self._merge(self.key_of(api_version, plural, namespace, name), patch, manager)

    def set_status(self, api_version, plural, namespace, name, status: dict) -> None:
        """What a controller writes (the status subresource)."""
        with self.lock:
            obj = self.store[self.key_of(api_version, plural, namespace, name)]
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = str(next(self.versions))

    def put(self, api_version, kind, plural, namespace, name, body: dict) -> None:
        """An object some other actor created (a controller: a token Secret, a node)."""
        with self.lock:
            obj = {"apiVersion": api_version, "kind": kind, **copy.deepcopy(body)}
            obj.setdefault("metadata", {}).update({"name": name, **({"namespace": namespace} if namespace else {})})
            self._stamp(obj, None)
            self.store[self.key_of(api_version, plural, namespace, name)] = obj

    def issue_token(self, namespace: str, account: str, audiences=("https://kubernetes.default.svc",),
                    ttl: int = 3600) -> tuple[str, str]:
        """A service account token as the TokenRequest API issues it (RS256, bound claims): (jwt, uid)."""
        uid = str(uuid.uuid4())
        now = int(time.time())
        claims = {"iss": "https://kubernetes.default.svc.cluster.local", "aud": list(audiences),
                  "sub": f"system:serviceaccount:{namespace}:{account}", "iat": now, "nbf": now, "exp": now + ttl,
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": uid}}}
        signing_input = f"{_b64url(json.dumps({'alg': 'RS256', 'typ': 'JWT', 'kid': 'double'}).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = self.signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}", uid

    # -- the store ---------------------------------------------------------------------------------

    def _stamp(self, obj, before):
        meta = obj.setdefault("metadata", {})
        if before is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self.versions))
            return
        for key in SERVER_METADATA:
            if key in before.get("metadata", {}):
                meta[key] = before["metadata"][key]
        if _comparable(obj) != _comparable(before):
            meta["resourceVersion"] = str(next(self.versions))
            if obj.get("spec") != before.get("spec"):
                meta["generation"] = before["metadata"].get("generation", 1) + 1

    def _render_owners(self, key, obj):
        obj["metadata"]["managedFields"] = [
            {"manager": manager, "operation": op, "apiVersion": obj["apiVersion"], "fieldsType": "FieldsV1",
             "fieldsV1": _fields_v1(paths)}
            for (manager, op), paths in sorted(self.owners.get(key, {}).items()) if paths]

    def _apply(self, key, applied, manager, force, dry_run):
        current = self.store.get(key)
        owners = {k: set(v) for k, v in self.owners.get(key, {}).items()}
        paths = {p for p in _paths(applied) if p not in IDENTITY and p[:2] not in
                 {("metadata", k) for k in SERVER_METADATA}}
        conflicts = []
        if current is not None:
            for (other, _operation), owned in owners.items():
                if other == manager:
                    continue
                for path in sorted(paths & owned):
                    if _lookup(current, path) != _lookup(applied, path):
                        conflicts.append((other, path))
        if conflicts and not force:
            listed = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            raise kmock.KubernetesError(status=409, reason="Conflict",
                                        message=f"Apply failed with {len(conflicts)} conflict(s): {listed}")
        new = copy.deepcopy(current) if current is not None else {
            "apiVersion": applied["apiVersion"], "kind": applied["kind"],
            "metadata": {k: applied["metadata"][k] for k in ("name", "namespace") if k in applied["metadata"]}}
        mine = owners.get((manager, "Apply"), set())
        others = set().union(*(v for k, v in owners.items() if k != (manager, "Apply")))
        for path in mine - paths - others:
            _remove(new, path)
        for path in paths:
            _assign(new, path, _lookup(applied, path))
        _defaults(new)
        for owner_key in owners:
            if owner_key != (manager, "Apply"):
                owners[owner_key] -= paths
        owners[(manager, "Apply")] = paths
        self._stamp(new, current)
        if dry_run:
            self._render_owners_into(new, owners)
            return new
        self.store[key], self.owners[key] = new, owners
        self._render_owners(key, new)
        return copy.deepcopy(new)

    def _render_owners_into(self, obj, owners):
        saved = self.owners.get(("dry-run",))
        self.owners[("dry-run",)] = owners
        self._render_owners(("dry-run",), obj)
        if saved is None:
            del self.owners[("dry-run",)]

    def _merge(self, key, patch, manager):
        current = self.store.get(key)
        if current is None:
            raise kmock.KubernetesObjectNotFoundError()
        new = _merge_patch(current, patch)
        _defaults(new)
        paths = set(_paths(patch))
        owners = self.owners.setdefault(key, {})
        for owner_key in owners:
            owners[owner_key] -= paths
        owners.setdefault((manager, "Update"), set()).update(paths)
        self._stamp(new, current)
        self.store[key] = new
        self._render_owners(key, new)
        return copy.deepcopy(new)

    # -- HTTP ---------------------------------------------------------------------------------------

    @staticmethod
    def _route(path):
        """(group, version, plural, namespace, name) of an object URL, or None (discovery, /version)."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2:
            return None
        return group, version, rest[0], namespace, (rest[1] if len(rest) == 2 else None)

    async def __call__(self, raw_request):
        """Object URLs are served here (kmock 0.8's own path parser fails on /api/v1/namespaces);
        discovery and /version by kmock's scaffold."""
        route = self._route(raw_request.path)
        if route is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        request = Call(method=raw_request.method.upper(), headers=dict(raw_request.headers),
                       params=dict(raw_request.query), text=body.decode() if body else "")
        group, version, plural, namespace, name = route
        if (group, plural) == ("authentication.k8s.io", "tokenreviews"):
            return self._token_review(request)
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
        if key not in self.resources:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({key})")
        try:
            with self.lock:
                return self._serve(request, group, version, plural, namespace, name, self.resources[key])
        except kmock.KubernetesError as exc:
            return self._status(exc.status, exc.reason, exc.message)

    def _status(self, code, reason, message):
        return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                                          "code": code, "reason": reason, "message": message}, status=code)

    def _serve(self, request, group, version, plural, namespace, name, info):
        method = request.method
        if info.namespaced and namespace is None and not (method == "GET" and name is None):
            raise kmock.KubernetesError(status=404, reason="NotFound", message="namespace required")
        namespace = namespace if info.namespaced else None
        key = (group, plural, namespace, name)
        api_version = f"{group}/{version}" if group else version
        resource = kmock.resource(group, version, plural)
        if method == "GET" and name is not None:
            if key not in self.store:
                raise kmock.KubernetesError(status=404, reason="NotFound",
                                            message=f'{resource.plural} "{name}" not found')
            return aiohttp.web.json_response(self.store[key])
        if method == "GET":
            wanted = dict(part.split("=", 1) for part in request.params.get("labelSelector", "").split(",") if part)
            items = [obj for (group, plural, ns, _), obj in sorted(self.store.items(), key=lambda kv: str(kv[0]))
                     if (group, plural) == (resource.group, resource.plural)
                     and (namespace is None or ns == namespace)
                     and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
            return aiohttp.web.json_response({"apiVersion": api_version, "kind": f"{info.kind}List",
                                              "metadata": {"resourceVersion": str(next(self.versions))},
                                              "items": items})
        if method == "DELETE" and name is not None:
            if key not in self.store:
                raise kmock.KubernetesError(status=404, reason="NotFound",
                                            message=f'{resource.plural} "{name}" not found')
            gone = self.store.pop(key)
            self.owners.pop(key, None)
            if resource.plural == "namespaces" and not resource.group:
                for other in [k for k in self.store if k[2] == name]:
                    self.store.pop(other)
                    self.owners.pop(other, None)
            return aiohttp.web.json_response(gone)
        if method == "PATCH" and name is not None:
            return self._patch(request, key, api_version, info, namespace, name)
        raise kmock.KubernetesError(status=405, reason="MethodNotAllowed", message=f"{request.method} not served")

    def _patch(self, request, key, api_version, info, namespace, name):
        kind = request.headers.get("Content-Type", "").split(";")[0]
        dry_run = request.params.get("dryRun") == "All"
        manager = request.params.get("fieldManager")
        if kind == "application/apply-patch+yaml":
            if not manager:
                raise kmock.KubernetesError(status=400, reason="BadRequest",
                                            message="PATCH, application/apply-patch+yaml requires fieldManager")
            applied = yaml.safe_load(request.text) or {}
            meta = applied.get("metadata") or {}
            if applied.get("apiVersion") != api_version or applied.get("kind") != info.kind:
                raise kmock.KubernetesError(status=400, reason="BadRequest",
                                            message=f"the body is {applied.get('apiVersion')}/{applied.get('kind')}, "
                                                    f"the URL {api_version}/{info.kind}")
            if meta.get("name") != name or (meta.get("namespace") or None) != namespace:
                raise kmock.KubernetesError(status=400, reason="BadRequest",
                                            message="the name or namespace of the body does not match the URL")
            if namespace and ("", "namespaces", None, namespace) not in self.store:
                raise kmock.KubernetesError(status=404, reason="NotFound",
                                            message=f'namespaces "{namespace}" not found')
            force = request.params.get("force") == "true"
            return aiohttp.web.json_response(self._apply(key, applied, manager, force, dry_run))
        if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return aiohttp.web.json_response(self._merge(key, json.loads(request.text or 'null'), manager or "unknown"))
        raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType", message=f"{kind} is not supported")

    def _token_review(self, request):
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.reviewer_tokens:
            return self._status(403, "Forbidden", "tokenreviews.authentication.k8s.io is forbidden: the caller "
                                                  "may not create TokenReviews (system:auth-delegator)")
        review = json.loads(request.text or '{}')
        spec = review.get("spec", {})
        self.reviews.append(spec)
        status = {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        try:
            header, payload, signature = spec.get("token", "").split(".")
            self.signing_key.public_key().verify(_unb64url(signature), f"{header}.{payload}".encode(),
                                                 padding.PKCS1v15(), hashes.SHA256())
            claims = json.loads(_unb64url(payload))
        except Exception:  # noqa: BLE001 - any malformed or forged token is "not authenticated"
            claims = None
        if claims and claims["exp"] > time.time():
            wanted = spec.get("audiences") or claims["aud"]
            common = [a for a in wanted if a in claims["aud"]]
            if common:
                account = claims["kubernetes.io"]
                status = {"authenticated": True, "audiences": common, "error": "",
                          "user": {"username": claims["sub"], "uid": account["serviceaccount"]["uid"],
                                   "groups": ["system:serviceaccounts",
                                              f"system:serviceaccounts:{account['namespace']}",
                                              "system:authenticated"]}}
            else:
                status["error"] = "token audiences do not match"
        self.review_results.append(status)
        return aiohttp.web.json_response({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                          "metadata": {"creationTimestamp": None}, "spec": spec, "status": status},
                                         status=201)


@dataclasses.dataclass
class Call:
    """One request to an object URL."""

    method: str
    headers: dict
    params: dict
    text: str


def _tls_server_cls(context):
    class TLSServer(RawTestServer):
        async def start_server(self, loop=None, **kwargs):
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return TLSServer


class RunningApiServer:
    """The double served over HTTPS on 127.0.0.1 by a thread of its own (the modules under test are
    synchronous and call it over the network)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.tls = TLS(workdir / "tls")
        self.admin_token = uuid.uuid4().hex
        self.token_file = workdir / "admin-token"
        self.token_file.write_text(self.admin_token + "\n")
        self.token_file.chmod(0o600)
        self.handler: ApiServer | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="k3s-api-double", daemon=True)
        self._error: BaseException | None = None

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self):
        self._stop = asyncio.Event()
        async with ApiServer(self.admin_token) as handler, \
                kmock.Server(handler, server_cls=_tls_server_cls(self.tls.context)) as server:
            self.handler = handler
            self.url = f"https://127.0.0.1:{server.port}"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> RunningApiServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error or not self.url:
            raise RuntimeError(f"the API double did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def module_config(self) -> dict:
        """The ``k3s`` minion config pointing the module at this double."""
        return {"url": self.url, "ca_file": str(self.tls.ca_file), "token_file": str(self.token_file),
                "client_cert": None, "client_key": None, "node_token_file": str(self.workdir / "node-token")}
