"""The k3s states against the Kubernetes API double (tests/k3s/apiserver.py: real HTTPS on loopback,
server-side apply with field ownership; not a cluster): applied directly and after a dry run, a
second run changing nothing, a person's edit shown as a diff and put back, pruning, rollouts waited
for within a bounded time, cluster facts, the node token into Vault and out to an agent's file, the
kubelet scraper's token and the cluster's CA into Vault. The test with an API server that is not up
stays last: tests placed after it in this module found the double's port closed."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time

import pytest

from tests.states.conftest import converges

pytestmark = pytest.mark.functional


def app(ns: str, replicas: int = 2, image: str = "registry.example.org/chat:1.4.2", **annotations) -> list[dict]:
    labels = {"app.kubernetes.io/name": ns}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": ns, "namespace": ns, **({"annotations": annotations} if annotations else {})},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": ns, "image": image,
                                                       "ports": [{"containerPort": 8080}]}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": ns, "namespace": ns},
               "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}
    return [service, deployment, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def applied(caller, name, manifests, **kwargs):
    return lambda test: caller.state("k3s.manifests_applied", name, test=test, manifests=manifests, **kwargs)


def deployment(apiserver, ns):
    return apiserver.handler.object("apps/v1", "deployments", ns, ns)


def test_a_new_set_is_created_then_left_alone(k3s_caller, apiserver, testmode):
    ns = unique("chat")
    rets = converges(applied(k3s_caller, f"app-{ns}", app(ns)), lambda: deployment(apiserver, ns) is not None,
                     {f"Namespace {ns}": {"old": None, "new": "created"},
                      f"Service {ns}/{ns}": {"old": None, "new": "created"},
                      f"Deployment {ns}/{ns}": {"old": None, "new": "created"}}, testmode)
    assert rets[-1]["comment"] == f"manifest set app-{ns}: 3 object(s) as declared"
    live = deployment(apiserver, ns)
    assert live["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "salt-platform",
                                          "salt-platform/set": f"app-{ns}"}
    managers = {f["manager"] for f in live["metadata"]["managedFields"]}
    assert managers == {"salt-platform"}, "not applied server-side by the platform's field manager"
    # The API server's defaults are on the live object, and still a second run saw no difference.
    assert live["spec"]["progressDeadlineSeconds"] == 600


def test_a_persons_edit_shows_as_a_diff_and_is_put_back(k3s_caller, apiserver, testmode):
    ns = unique("api")
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns))["result"] is True
    apiserver.handler.edit("apps/v1", "deployments", ns, ns, {"spec": {"replicas": 5}})
    assert deployment(apiserver, ns)["spec"]["replicas"] == 5
    version = deployment(apiserver, ns)["metadata"]["resourceVersion"]
    if testmode:
        planned = k3s_caller.state("k3s.manifests_applied", f"app-{ns}", test=True, manifests=app(ns))
        assert planned["result"] is None
        diff = planned["changes"][f"Deployment {ns}/{ns}"]["diff"]
        assert "-  replicas: 5\n" in diff and "+  replicas: 2\n" in diff, diff
        assert list(planned["changes"]) == [f"Deployment {ns}/{ns}"]
        assert deployment(apiserver, ns)["metadata"]["resourceVersion"] == version, "a dry run changed the object"
    ret = k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns))
    assert ret["result"] is True, ret["comment"]
    assert "+  replicas: 2\n" in ret["changes"][f"Deployment {ns}/{ns}"]["diff"]
    assert deployment(apiserver, ns)["spec"]["replicas"] == 2
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", test=testmode, manifests=app(ns))["changes"] == {}


def test_a_field_no_longer_declared_is_removed(k3s_caller, apiserver, testmode):
    ns = unique("web")
    annotated = app(ns, **{"platform.example/owner": "team-web"})
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=annotated)["result"] is True
    assert deployment(apiserver, ns)["metadata"]["annotations"] == {"platform.example/owner": "team-web"}
    rets = [k3s_caller.state("k3s.manifests_applied", f"app-{ns}", test=True, manifests=app(ns, image="x/web:2"))] \
        if testmode else []
    rets.append(k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns, image="x/web:2")))
    for ret in rets:
        diff = ret["changes"][f"Deployment {ns}/{ns}"]["diff"]
        assert "-    platform.example/owner: team-web\n" in diff and "+      - image: x/web:2\n" in diff, diff
    live = deployment(apiserver, ns)
    assert "annotations" not in live["metadata"]
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "x/web:2"
    assert live["metadata"]["generation"] == 2


def test_what_the_site_no_longer_names_is_deleted(k3s_caller, apiserver, testmode):
    keep, drop = unique("keep"), unique("drop")
    other = unique("other")
    assert k3s_caller.state("k3s.manifests_applied", "apps", manifests=app(keep) + app(drop))["result"] is True
    assert k3s_caller.state("k3s.manifests_applied", "elsewhere", manifests=app(other))["result"] is True
    gone = {f"Namespace {drop}", f"Service {drop}/{drop}", f"Deployment {drop}/{drop}"}
    converges(applied(k3s_caller, "apps", app(keep)), lambda: deployment(apiserver, drop) is None,
              {name: {"old": "present", "new": "deleted"} for name in gone}, testmode)
    assert deployment(apiserver, keep) is not None
    assert deployment(apiserver, other) is not None, "pruning reached a set of its own"


def test_pruning_leaves_what_only_carries_the_label(k3s_caller, apiserver):
    """A Secret an operator made from an ExternalSecret's labels was never applied by the set."""
    ns = unique("eso")
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns))["result"] is True
    apiserver.handler.put("v1", "Secret", "secrets", ns, f"{ns}-credentials", {
        "metadata": {"labels": {"salt-platform/set": f"app-{ns}"}}, "data": {"PASSWORD": "c2VjcmV0"}})
    ret = k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns))
    assert ret["result"] is True and ret["changes"] == {}
    assert apiserver.handler.object("v1", "secrets", ns, f"{ns}-credentials") is not None


def test_vaults_ca_is_published_for_the_stores(k3s_caller, apiserver, tmp_path, testmode):
    ns = unique("external-secrets")
    assert k3s_caller.state("k3s.manifests_applied", ns, manifests=[
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])["result"] is True
    ca = tmp_path / "vault-ca.crt"
    ca.write_text(apiserver.tls.ca_pem)

    def published():
        found = apiserver.handler.object("v1", "configmaps", ns, "vault-ca")
        return found is not None and found["data"]["ca.crt"] == apiserver.tls.ca_pem

    converges(lambda test: k3s_caller.state("k3s.vault_ca_published", "vault-ca", test=test, namespace=ns,
                                            ca_file=str(ca)),
              published, {f"ConfigMap {ns}/vault-ca": {"old": None, "new": "created"}}, testmode)
    ca.write_text("not a certificate")
    refused = k3s_caller.state("k3s.vault_ca_published", "vault-ca", namespace=ns, ca_file=str(ca))
    assert refused["result"] is False and "not a PEM certificate" in refused["comment"]


def test_a_kind_the_cluster_does_not_serve_fails_with_the_reason(k3s_caller):
    widget = {"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}}
    planned = k3s_caller.state("k3s.manifests_applied", "widgets", test=True, manifests=[widget])
    assert planned["result"] is None
    assert "does not serve Widget" in planned["changes"]["Widget default/w"]["new"]
    ret = k3s_caller.state("k3s.manifests_applied", "widgets", manifests=[widget])
    assert ret["result"] is False
    assert ret["comment"] == ("manifest set widgets: Widget default/w: Widget (example.org/v1) is not served by "
                              "the API server")


def test_a_rollout_is_waited_for_within_its_timeout(k3s_caller, apiserver, testmode):
    ns = unique("roll")
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns, replicas=3))["result"] is True
    if testmode:
        planned = k3s_caller.state("k3s.rollout_complete", ns, test=True, namespace=ns, timeout=30)
        assert planned["result"] is None
        assert planned["comment"] == (f"Deployment {ns}/{ns}: waiting for the controller to observe the new spec; "
                                      f"would wait up to 30 s")
    started = time.monotonic()
    late = k3s_caller.state("k3s.rollout_complete", ns, namespace=ns, timeout=2, interval=0.5)
    took = time.monotonic() - started
    assert late["result"] is False and late["changes"] == {}
    assert late["comment"] == (f"rollout not complete after 2 s: Deployment {ns}/{ns}: waiting for the controller "
                               f"to observe the new spec")
    assert 2 <= took < 6, f"the timeout was not kept: {took:.1f} s"

    def controller():
        time.sleep(0.5)
        apiserver.handler.set_status("apps/v1", "deployments", ns, ns, {
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1})
        time.sleep(1)
        apiserver.handler.set_status("apps/v1", "deployments", ns, ns, {
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})

    thread = threading.Thread(target=controller)
    thread.start()
    done = k3s_caller.state("k3s.rollout_complete", ns, test=testmode, namespace=ns, timeout=30, interval=0.2)
    thread.join()
    if testmode:  # the dry run does not wait; the rollout finishes meanwhile, a real run sees it done
        done = k3s_caller.state("k3s.rollout_complete", ns, namespace=ns, timeout=30, interval=0.2)
    assert done["result"] is True, done["comment"]
    assert done["comment"] == f"Deployment {ns}/{ns}: rolled out (3 replica(s) available)"
    assert done["changes"] == {}


def test_a_rollout_past_its_deadline_fails_at_once(k3s_caller, apiserver):
    ns = unique("stuck")
    assert k3s_caller.state("k3s.manifests_applied", f"app-{ns}", manifests=app(ns))["result"] is True
    apiserver.handler.set_status("apps/v1", "deployments", ns, ns, {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{ns}-5d9c" has timed out progressing.'}]})
    started = time.monotonic()
    ret = k3s_caller.state("k3s.rollout_complete", ns, namespace=ns, timeout=60)
    assert time.monotonic() - started < 5
    assert ret["result"] is False
    assert ret["comment"] == (f"rollout failed: Deployment {ns}/{ns}: progress deadline exceeded "
                              f'(ReplicaSet "{ns}-5d9c" has timed out progressing.)')


def test_cluster_facts(k3s_caller, apiserver):
    def node(name, ready, role=None):
        labels = {f"node-role.kubernetes.io/{role}": "true"} if role else {}
        apiserver.handler.put("v1", "Node", "nodes", None, name, {
            "metadata": {"labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.5+k3s1"},
                       "addresses": [{"type": "InternalIP", "address": "10.10.10.112"}]}})

    node("k3s", True, "control-plane")
    facts = k3s_caller.cmd("k3s.facts")
    assert facts == {"version": "v1.33.5+k3s1", "ready": True, "nodes": {"k3s": {
        "ready": True, "roles": ["control-plane"], "kubelet": "v1.33.5+k3s1", "internal_ip": "10.10.10.112"}}}
    node("k3s-agent-1", False)
    assert k3s_caller.cmd("k3s.facts")["ready"] is False


def test_the_node_token_goes_to_vault_and_to_an_agents_file(k3s_caller, apiserver, bao, tmp_path, testmode):
    token = f"K10{secrets.token_hex(32)}::server:{secrets.token_hex(16)}"
    token_file = apiserver.workdir / "node-token"
    token_file.write_text(token + "\n")
    path = f"roles/k3s/{unique('join')}"

    def stored():
        try:
            return bao.read(path, "token") == token
        except Exception:  # noqa: BLE001 - absent
            return False

    converges(lambda test: k3s_caller.state("k3s.node_token_stored", path, test=test), stored,
              {"token": {"old": None, "new": "(the server's node token)"}}, testmode, secret_values=(token,))
    agent_file = tmp_path / "etc-rancher" / "token"
    converges(lambda test: k3s_caller.state("k3s.join_token_file", str(agent_file), test=test, vault_path=path),
              lambda: agent_file.is_file() and agent_file.read_text().strip() == token,
              {"token": {"old": None, "new": f"(from secret/data/{path})"}}, testmode, secret_values=(token,))
    assert os.stat(agent_file).st_mode & 0o777 == 0o600
    assert json.dumps(k3s_caller.cmd("k3s.facts")).find(token) == -1


def test_the_kubelet_scrapers_token_and_the_clusters_ca_go_to_vault_for_prometheus(k3s_caller, apiserver, bao,
                                                                                  testmode):
    """The site's scraper account (sitectl.apps: what salt/k3s/cluster.sls applies), filled by the token
    controller (the test plays it), then its token and the cluster's CA stored where the monitoring
    role reads them."""
    import base64

    import yaml

    from sitectl import ROOT, apps
    from tests.conftest import load_site

    ns, account = unique("system"), unique("prometheus-kubelet")
    apiserver.handler.put("v1", "Namespace", "namespaces", None, ns, {})  # as kube-system exists in a cluster
    catalog = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    pillar = {"site": load_site(), "roles": catalog,
              "monitoring": {"kubelet": {"namespace": ns, "service_account": account}}}
    ret = k3s_caller.state("k3s.manifests_applied", unique("scraper"), manifests=apps.kubelet_scraper_manifests(pillar))
    assert ret["result"] is True, ret["comment"]
    role = apiserver.handler.object("rbac.authorization.k8s.io/v1", "clusterroles", None, account)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]
    path = f"roles/monitoring/{unique('kubelet')}"
    waiting = k3s_caller.state("k3s.service_account_token_stored", path, secret=account, namespace=ns)
    assert waiting["result"] is False
    assert "has no token or ca.crt yet" in waiting["comment"], "the token controller has not filled it"

    jwt, _ = apiserver.handler.issue_token(ns, account, ttl=86400)
    live = apiserver.handler.object("v1", "secrets", ns, account)
    live["data"] = {"token": base64.b64encode(jwt.encode()).decode(),
                    "ca.crt": base64.b64encode(apiserver.tls.ca_pem.encode()).decode()}
    apiserver.handler.put("v1", "Secret", "secrets", ns, account, live)

    def stored():
        try:
            return bao.read(path, "token") == jwt and bao.read(path, "ca") == apiserver.tls.ca_pem
        except Exception:  # noqa: BLE001 - absent
            return False

    converges(lambda test: k3s_caller.state("k3s.service_account_token_stored", path, test=test, secret=account,
                                            namespace=ns), stored,
              {"token": {"old": None, "new": f"(the token of {ns}/{account})"},
               "ca": {"old": None, "new": "(the cluster's CA certificate)"}}, testmode, secret_values=(jwt,))


def test_a_rollout_waits_for_an_api_server_that_is_not_up_yet_within_its_timeout(tmp_path, apiserver, bao,
                                                                               bao_token_file):
    from tests.openbao import free_port
    from tests.states.conftest import make_caller

    closed = {**apiserver.module_config(), "url": f"https://127.0.0.1:{free_port()}"}
    caller = make_caller(tmp_path / "salt", bao, bao_token_file, {"k3s": closed})
    started = time.monotonic()
    ret = caller.state("k3s.rollout_complete", "coredns", namespace="kube-system", timeout=2, interval=0.5)
    assert 2 <= time.monotonic() - started < 8
    assert ret["result"] is False
    assert "the API server at https://127.0.0.1:" in ret["comment"] and "is unreachable" in ret["comment"]
