"""Every manifest the k3s role applies, as the compiled highstate of the k3s guest carries it, checked
against the schema of the pinned Kubernetes version (``kubernetes-validate``, strict: an unknown field
is an error) and External Secrets Operator's resources against ESO's own CRD schemas (the npm package
``@kubernetes-models/external-secrets``, installed here by ``npm`` on first use). k3s's HelmChart
has no published schema package: its fields are checked against the list in k3s's documentation.

L1 only: no API server takes these manifests here (see tests/k3s for the API double)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sitectl import ROOT, render
from sitectl import site as site_rules
from tests.conftest import state_args

pytestmark = pytest.mark.render

ESO_DIR = Path(__file__).parent / "eso"
# helm.cattle.io/v1 HelmChart spec fields (docs.k3s.io, "Helm": HelmChart Field Definitions).
HELMCHART_FIELDS = {"chart", "repo", "version", "targetNamespace", "createNamespace", "valuesContent", "set",
                    "helmVersion", "bootstrap", "jobImage", "timeout", "failurePolicy", "authSecret",
                    "authPassCredentials", "repoCA", "repoCAConfigMap", "chartContent", "dockerRegistrySecret",
                    "insecureSkipTLSVerify", "plainHTTP", "backOffLimit", "podSecurityContext", "securityContext"}


@pytest.fixture(scope="session")
def eso_validator() -> Path:
    """ESO's CRD schemas from npm, installed once beside the validator script."""
    if not (ESO_DIR / "node_modules" / "@kubernetes-models" / "external-secrets").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is missing (Debian's nodejs/npm): needed for ESO's CRD schemas"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=ESO_DIR,  # the lockfile's versions
                       check=True, timeout=600, capture_output=True)
    return ESO_DIR / "validate.mjs"


def eso_problems(validator: Path, manifests: list[dict]) -> list[dict]:
    out = subprocess.run([shutil.which("node") or "node", str(validator)], input=json.dumps(manifests),
                         capture_output=True, text=True, check=True, timeout=120, cwd=ESO_DIR)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def k3s_highstate(example_config) -> dict:
    high = render.caller(example_config, "k3s").cmd("state.show_sls", "k3s")
    assert isinstance(high, dict), high
    return high


@pytest.fixture(scope="module")
def applied_sets(k3s_highstate) -> dict[str, list[dict]]:
    """set name -> manifests, from the k3s.manifests_applied states of the compiled highstate."""
    sets = {}
    for state in k3s_highstate.values():
        if isinstance(state, dict) and "k3s" in state:
            args = state_args(state, "k3s")
            if args["__fun__"] == "manifests_applied":
                sets[args["name"]] = args["manifests"]
    return sets


def kubernetes_version() -> str:
    defaults = yaml.safe_load((ROOT / "salt" / "k3s" / "defaults.yaml").read_text())["k3s"]
    return defaults["kubernetes_version"] + ".0"


def test_the_highstate_applies_the_system_set_and_one_set_per_app(applied_sets, example_site):
    assert set(applied_sets) == {"platform-system", *(f"app-{app}" for app in example_site["apps"])}


def test_every_builtin_manifest_is_valid_for_the_pinned_kubernetes(applied_sets):
    version = kubernetes_version()
    checked = 0
    for set_name, manifests in applied_sets.items():
        for manifest in manifests:
            if manifest["apiVersion"].split("/")[0] in ("external-secrets.io", "helm.cattle.io"):
                continue
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{set_name}: {manifest['kind']} {manifest['metadata']['name']}: {exc.message} "
                            f"at {'.'.join(map(str, exc.path))}")
            checked += 1
    assert checked >= 12


def test_a_broken_manifest_is_caught_by_the_schema():
    """The check can fail: a Deployment with a misspelt field and one with a wrong type."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_version(), strict=True)
    deployment["spec"]["replicas"] = deployment["spec"].pop("replica")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_version(), strict=True)


def test_eso_resources_are_valid_for_esos_crds(applied_sets, eso_validator):
    eso = [m for manifests in applied_sets.values() for m in manifests
           if m["apiVersion"].startswith("external-secrets.io/")]
    kinds = sorted({m["kind"] for m in eso})
    assert kinds == ["ClusterSecretStore", "ExternalSecret"]
    assert eso_problems(eso_validator, eso) == []
    broken = json.loads(json.dumps(eso[0]))
    if broken["kind"] == "ClusterSecretStore":
        broken["spec"]["provider"]["vault"]["auth"]["kubernetes"].pop("role")
    else:
        broken["spec"]["secretStoreRef"]["kind"] = "Store"
    assert len(eso_problems(eso_validator, [broken])) == 1, "ESO's schema check cannot fail"


def test_the_helmchart_uses_only_documented_fields_and_pins_the_chart(applied_sets):
    (chart,) = [m for m in applied_sets["platform-system"] if m["kind"] == "HelmChart"]
    assert set(chart["spec"]) <= HELMCHART_FIELDS
    assert chart["spec"]["version"] == "0.20.1"
    assert chart["metadata"]["namespace"] == "kube-system", "k3s's helm controller watches kube-system"


def test_an_app_gets_its_credentials_from_vault_and_nothing_secret_is_in_a_manifest(applied_sets, example_config):
    chat = {m["kind"]: m for m in applied_sets["app-chat-api"]}
    assert sorted(chat) == ["ClusterSecretStore", "Deployment", "ExternalSecret", "Ingress", "Namespace", "Service",
                            "ServiceAccount"]
    store = chat["ClusterSecretStore"]["spec"]
    assert store["conditions"] == [{"namespaces": ["chat-api"]}], "only the app's namespace may use its store"
    auth = store["provider"]["vault"]["auth"]["kubernetes"]
    assert auth == {"mountPath": "kubernetes", "role": "app-chat-api",
                    "serviceAccountRef": {"name": "chat-api-vault", "namespace": "chat-api"}}
    assert [d["remoteRef"] for d in chat["ExternalSecret"]["spec"]["data"]] == [
        {"key": "roles/postgresql/users/apps", "property": "password"},
        {"key": "roles/rabbitmq/users/apps", "property": "password"}]
    env = {e["name"]: e for e in chat["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PG_APPS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "chat-api-credentials",
                                                                     "key": "PG_APPS_PASSWORD"}}
    assert env["PG_APPS_HOST"]["value"] == "10.10.10.103"
    assert chat["Ingress"]["spec"]["rules"][0]["host"] == "api.your-domain.com"
    assert chat["Ingress"]["spec"]["ingressClassName"] == "traefik"
    web = {m["kind"] for m in applied_sets["app-web"]}
    assert web == {"Namespace", "Deployment", "Service", "Ingress"}, "an SPA holds no credentials"
    assert "Secret" not in {m["kind"] for ms in applied_sets.values() for m in ms if m.get("data")}


def test_vault_gets_a_role_and_a_policy_per_app_for_exactly_its_secrets(example_config):
    high = render.caller(example_config, "vault").cmd("state.show_sls", "vault.configure")
    role = state_args(high["vault-configure-kubernetes-role-app-chat-api-present"], "vault_server")
    assert role["bound_service_account_names"] == ["chat-api-vault"]
    assert role["bound_service_account_namespaces"] == ["chat-api"]
    assert role["token_policies"] == ["k3s_app_chat_api"]
    rules = state_args(high["vault-configure-policy-k3s_app_chat_api-present"], "vault_server")["rules"]
    assert sorted(line for line in rules.splitlines() if line.startswith("path")) == [
        'path "secret/data/apps/chat-api/*" { capabilities = ["read"] }',
        'path "secret/data/roles/postgresql/users/apps" { capabilities = ["read"] }',
        'path "secret/data/roles/rabbitmq/users/apps" { capabilities = ["read"] }']
    assert "vault-configure-kubernetes-role-app-web-present" not in high, "an SPA has no Vault role"
    server = state_args(high["vault-configure-policy-minion-k3s-present"], "vault_server")["rules"]
    assert 'path "auth/kubernetes/config" { capabilities = ["create", "read", "update"] }' in server
    others = [sid for sid in high if sid.startswith("vault-configure-policy-") and sid != "vault-configure-policy-"
              "minion-k3s-present" and "auth/kubernetes/config" in str(high[sid])]
    assert others == ["vault-configure-policy-role-vault-present"], "only the k3s server (and Vault's own guest)"


def test_the_proxy_routes_each_app_to_traefik_on_the_k3s_guest(example_site):
    catalog = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    edge = site_rules.platform_pillar({"site": example_site, "roles": catalog}, "reverse-proxy")["platform"]["edge"]
    routes = {r["name"]: r for r in edge["routes"]}
    assert routes["api"]["upstream"] == "10.10.10.112:80"
    assert routes["app"]["upstream"] == "10.10.10.112:80"
    assert routes["api"]["fqdn"] == "api.your-domain.com"


def test_the_lab_converges_k3s_up_to_the_binary_and_says_so(tmp_path):
    from sitectl.config import SaltSettings, write_config

    conf = write_config(SaltSettings(state_dir=tmp_path, overlay="lab"))
    high = render.caller(conf, "k3s").cmd("state.show_sls", "k3s")
    assert isinstance(high, dict), high
    assert "k3s-config-file-managed" in high and "k3s-prerequisites-kmsg-present" in high
    assert not [sid for sid in high if sid.startswith(("k3s-service", "k3s-cluster", "k3s-binary-installed"))]
    notice = state_args(high["k3s-binary-not-installed"], "test")
    assert "NOT installed here: no k3s build is reachable offline" in notice["text"]


def test_a_second_k3s_guest_joins_the_first_as_an_agent_with_the_token_from_vault(tmp_path):
    from tests.conftest import make_checkout

    described = yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())
    described["site"]["guests"]["k3s-agent"] = {**described["site"]["guests"]["k3s"], "vmid": 113,
                                                "address": "10.10.10.113/24"}
    site_file = tmp_path / "two-nodes.sls"
    site_file.write_text(yaml.safe_dump(described))
    _, conf = make_checkout(tmp_path, site_file, site_name="two-nodes")
    high = render.caller(conf, "k3s-agent").cmd("state.show_sls", "k3s")
    assert isinstance(high, dict), high
    token = state_args(high["k3s-config-join-token-present"], "k3s")
    assert token == {**token, "__fun__": "join_token_file", "name": "/etc/rancher/k3s/join-token",
                     "vault_path": "roles/k3s/node-token"}
    assert not [sid for sid in high if sid.startswith("k3s-cluster")], "only the server applies manifests"
    config = state_args(high["k3s-config-file-managed"], "file")["context"]
    assert config["is_server"] is False and config["server_url"] == "https://10.10.10.112:6443"
    assert "k3s-agent" in state_args(high["k3s-service-unit-managed"], "file")["name"]
    server = render.caller(conf, "k3s").cmd("state.show_sls", "k3s")
    assert "k3s-cluster-node-token-stored" in server and "k3s-config-join-token-present" not in server
    pillar = render.pillar(conf, "k3s")
    vxlan = next(r for r in pillar["platform"]["guest"]["firewall"] if r["name"] == "flannel-vxlan")
    assert vxlan["from"] == ["10.10.10.112/32", "10.10.10.113/32"] and vxlan["proto"] == "udp"


def test_the_cluster_gives_the_sites_prometheus_a_kubelet_scraper_reading_node_metrics_only(
        applied_sets, k3s_highstate, example_config):
    system = {(m["kind"], m["metadata"]["name"]): m for m in applied_sets["platform-system"]}
    role = system["ClusterRole", "prometheus-kubelet"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]
    binding = system["ClusterRoleBinding", "prometheus-kubelet"]
    assert binding["roleRef"]["name"] == "prometheus-kubelet"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-kubelet", "namespace": "kube-system"}]
    assert system["Secret", "prometheus-kubelet"]["type"] == "kubernetes.io/service-account-token"
    assert ("ServiceAccount", "prometheus-kubelet") in system
    stored = state_args(k3s_highstate["k3s-cluster-kubelet-scraper-token-stored"], "k3s")
    assert stored == {**stored, "__fun__": "service_account_token_stored", "name": "roles/monitoring/kubelet",
                      "secret": "prometheus-kubelet", "namespace": "kube-system", "mount": "secret"}
    assert {"k3s": "k3s-cluster-platform-system-applied"} in stored["require"]
    vault = render.caller(example_config, "vault").cmd("state.show_sls", "vault.configure")
    writers = [sid for sid, state in vault.items() if sid.startswith("vault-configure-policy-")
               and "roles/monitoring/kubelet" in str(state)]
    assert writers == ["vault-configure-policy-minion-k3s-present"], "the k3s server alone writes it"
    rules = state_args(vault["vault-configure-policy-minion-k3s-present"], "vault_server")["rules"]
    assert 'path "secret/data/roles/monitoring/kubelet" { capabilities = ["create", "read", "update"] }' in rules


def test_a_site_without_monitoring_has_no_kubelet_scraper(example_site):
    import copy

    catalog = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    data = copy.deepcopy(example_site)
    data["guests"]["monitoring"]["roles"] = ["rabbitmq"]
    cluster = site_rules.platform_pillar({"site": data, "roles": catalog}, "k3s")["platform"]["k3s"]
    assert cluster["kubelet_scraper"] is None
    assert not [m for m in cluster["sets"]["platform-system"] if m["metadata"]["name"] == "prometheus-kubelet"]
