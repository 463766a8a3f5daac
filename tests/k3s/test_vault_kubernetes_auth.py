"""Vault's Kubernetes auth for the apps, for real on Vault's side: a real OpenBao configured by the
project's own states (the auth mount, one role and one policy per app as salt/vault/configure.sls
renders them for the example site's vault guest; the reviewer's JWT and CA read from the cluster by
``k3s.vault_auth_configured``), and the cluster played by the API double (tests/k3s/apiserver.py),
which answers OpenBao's TokenReview calls for the service account tokens it issued.

A service account of an app logs in, reads exactly its app's credentials and is refused another
app's; a token of another namespace, another account or a foreign signer is refused at login."""

from __future__ import annotations

import base64

import hvac
import hvac.exceptions
import pytest

from sitectl import render
from sitectl.vaultctl import state_call
from tests.openbao import BaoServer
from tests.states.conftest import converges, make_caller
from tests.vault.conftest import write_token

pytestmark = pytest.mark.functional

MOUNT = "kubernetes"


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    """A dev OpenBao of this module's own (its Kubernetes auth mount is configured once, for real)."""
    server = BaoServer(tmp_path_factory.mktemp("bao-k8s"), dev=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vault_highstate(example_config) -> dict:
    """salt/vault/configure.sls as rendered for the example site's vault guest. Rendered before this
    module's Salt caller exists: a later render's loader would take the caller's Vault settings."""
    high = render.caller(example_config, "vault").cmd("state.show_sls", "vault.configure")
    assert isinstance(high, dict), high
    return high


@pytest.fixture(scope="module")
def caller(tmp_path_factory, vault, apiserver, vault_highstate):
    base = tmp_path_factory.mktemp("salt-k8s-auth")
    return make_caller(base, vault, write_token(base / "token", vault.root_token),
                       {"k3s": apiserver.module_config()})


@pytest.fixture(scope="module")
def reviewer(apiserver):
    """The cluster's token reviewer as k3s's token controller fills it: a service-account-token Secret
    with a long-lived JWT and the cluster's CA, and the right to create TokenReviews."""
    jwt, _ = apiserver.handler.issue_token("kube-system", "vault-token-reviewer", ttl=86400)
    apiserver.handler.reviewer_tokens.add(jwt)
    apiserver.handler.put("v1", "Secret", "secrets", "kube-system", "vault-token-reviewer", {
        "type": "kubernetes.io/service-account-token",
        "data": {"token": base64.b64encode(jwt.encode()).decode(),
                 "ca.crt": base64.b64encode(apiserver.tls.ca_pem.encode()).decode()}})
    return jwt


@pytest.fixture(scope="module")
def vault_configured(caller, vault_highstate):
    """The vault guest's own states for Kubernetes auth and the apps, applied to this OpenBao."""
    high = vault_highstate
    ids = ["vault-configure-kubernetes-enabled",
           *sorted(i for i in high if i.startswith(("vault-configure-policy-k3s_app_",
                                                    "vault-configure-kubernetes-role-app-")))]
    assert len(ids) == 5, ids  # the mount, and a policy and a role for each of the two backends
    for state_id in ids:
        fun, name, kwargs = state_call(high[state_id])
        ret = caller.state(fun, name, **kwargs)
        assert ret["result"] is True, f"{state_id}: {ret['comment']}"
        assert caller.state(fun, name, **kwargs)["changes"] == {}, f"{state_id}: a second run changed something"
    return ids


@pytest.fixture(scope="module")
def credentials(vault):
    """What the data tier generated into Vault, and each app's own secret."""
    values = {}
    for path in ("roles/postgresql/users/apps", "roles/rabbitmq/users/apps", "apps/chat-api/config",
                 "apps/orders/config"):
        values[path] = f"value-of-{path.replace('/', '-')}"
        vault.write(path, password=values[path])
    return values


def test_the_cluster_configures_kubernetes_auth_from_its_own_facts(caller, vault, apiserver, reviewer, testmode):
    mount = f"kubernetes-{'dry-run-first' if testmode else 'applied'}"
    vault.client().sys.enable_auth_method("kubernetes", path=mount)

    def configured():
        found = vault.client().read(f"auth/{mount}/config")
        return bool(found) and found["data"]["kubernetes_host"] == apiserver.url

    shown = {"kubernetes_host": apiserver.url, "kubernetes_ca_cert": apiserver.tls.ca_pem,
             "token_reviewer_jwt": "(secret)", "disable_local_ca_jwt": True}
    converges(lambda test: caller.state("k3s.vault_auth_configured", mount, test=test,
                                        kubernetes_host=apiserver.url),
              configured, {f"auth/{mount}/config": {"old": None, "new": shown}}, testmode,
              secret_values=(reviewer,))
    config = vault.client().read(f"auth/{mount}/config")["data"]
    assert config["kubernetes_ca_cert"].strip() == apiserver.tls.ca_pem.strip()
    assert config["disable_local_ca_jwt"] is True


@pytest.fixture(scope="module")
def auth_ready(caller, vault, apiserver, reviewer, vault_configured):
    ret = caller.state("k3s.vault_auth_configured", MOUNT, kubernetes_host=apiserver.url)
    assert ret["result"] is True, ret["comment"]
    return True


def login(vault, apiserver, role, namespace, account, signer=None):
    jwt, _ = (apiserver.handler if signer is None else signer).issue_token(namespace, account)
    client = hvac.Client(url=vault.url)
    client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=MOUNT)
    return client


def read(client, path):
    return client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                    raise_on_deleted_version=True)["data"]["data"]["password"]


def test_an_apps_service_account_reads_exactly_its_credentials(vault, apiserver, auth_ready, credentials):
    reviews_before = len(apiserver.handler.reviews)
    chat = login(vault, apiserver, "app-chat-api", "chat-api", "chat-api-vault")
    assert len(apiserver.handler.reviews) == reviews_before + 1, "OpenBao did not ask the cluster (TokenReview)"
    for path in ("roles/postgresql/users/apps", "roles/rabbitmq/users/apps", "apps/chat-api/config"):
        assert read(chat, path) == credentials[path]
    with pytest.raises(hvac.exceptions.Forbidden):
        read(chat, "apps/orders/config")

    orders = login(vault, apiserver, "app-orders", "orders", "orders-vault")
    assert read(orders, "roles/postgresql/users/apps") == credentials["roles/postgresql/users/apps"]
    assert read(orders, "apps/orders/config") == credentials["apps/orders/config"]
    for other in ("roles/rabbitmq/users/apps", "apps/chat-api/config"):
        with pytest.raises(hvac.exceptions.Forbidden):
            read(orders, other)


@pytest.mark.parametrize(("role", "namespace", "account"), [
    ("app-chat-api", "orders", "chat-api-vault"),      # the role's account name, another namespace
    ("app-chat-api", "chat-api", "default"),           # the role's namespace, another account
    ("app-orders", "chat-api", "chat-api-vault"),      # one app's account asking for another app's role
], ids=["other-namespace", "other-account", "other-apps-role"])
def test_a_token_bound_elsewhere_is_refused(vault, apiserver, auth_ready, role, namespace, account):
    with pytest.raises(hvac.exceptions.VaultError) as refused:
        login(vault, apiserver, role, namespace, account)
    assert "not authorized" in str(refused.value) or "permission denied" in str(refused.value), str(refused.value)


def test_a_token_the_cluster_did_not_issue_is_refused(vault, apiserver, auth_ready, tmp_path):
    from tests.k3s.apiserver import ApiServer

    forger = ApiServer("not-the-admin")
    before = len(apiserver.handler.reviews)
    with pytest.raises(hvac.exceptions.VaultError) as refused:
        login(vault, apiserver, "app-chat-api", "chat-api", "chat-api-vault", signer=forger)
    assert len(apiserver.handler.reviews) == before + 1, "the cluster was not asked"
    assert apiserver.handler.review_results[-1]["authenticated"] is False
    assert "permission denied" in str(refused.value), str(refused.value)

