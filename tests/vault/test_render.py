"""The vault role rendered for the example site's `vault` guest with Salt's own compiler (no
daemon), asserting on the rendered states."""

from __future__ import annotations

import pytest

from sitectl import render
from sitectl.roles import secret_grants
from tests.conftest import guest_with_role, load_site, state_args

pytestmark = pytest.mark.render

SITE = load_site()
VAULT = guest_with_role(SITE, "vault")

OPENBAO = {"vault": {"server": {"flavor": "openbao", "binary_source": "salt://lab/openbao/bao"}}}


def show(config, pillar=None) -> dict:
    high = render.caller(config, VAULT).cmd("state.show_sls", "vault", pillar=pillar)
    assert isinstance(high, dict), high
    return high


@pytest.fixture(scope="module")
def vault_high(example_config):
    return show(example_config)


@pytest.fixture(scope="module")
def openbao_high(example_config):
    return show(example_config, OPENBAO)


def test_production_installs_hashicorps_package_from_its_apt_repository(vault_high):
    repo = state_args(vault_high["vault-package-repo-managed"], "pkgrepo")
    assert "https://apt.releases.hashicorp.com bookworm main" in repo["name"]
    assert state_args(vault_high["vault-package-installed"], "pkg")["name"] == "vault"


def test_openbao_comes_from_the_masters_file_server_and_never_from_a_download(vault_high, openbao_high, example_config):
    binary = state_args(openbao_high["vault-package-installed"], "master_file")
    assert binary["source"] == "salt://lab/openbao/bao" and binary["name"] == "/usr/local/bin/bao"
    assert "vault-package-repo-managed" not in openbao_high
    unset = show(example_config, {"vault": {"server": {"flavor": "openbao"}}})
    failing = state_args(unset["vault-package-installed"], "test")
    assert failing["__fun__"] == "fail_without_changes" and "binary_source is not set" in failing["name"]


def test_server_config_raft_tls_listeners_telemetry_and_audit(example_config):
    caller = render.caller(example_config, VAULT)
    for pillar, flavor in ((None, "vault"), (OPENBAO, "openbao")):
        high = show(example_config, pillar)
        conf = state_args(high["vault-config-file-managed"], "file")
        text = caller.cmd("file.apply_template_on_contents",
                          open(caller.cmd("cp.cache_file", conf["source"])).read(),
                          "jinja", conf["context"], None, "base")
        d = "/etc/vault.d" if flavor == "vault" else "/etc/openbao"
        assert 'storage "raft"' in text and 'node_id = "vault"' in text
        assert 'address         = "10.10.10.111:8200"' in text and 'address         = "127.0.0.1:8200"' in text
        assert f'tls_cert_file   = "{d}/tls/server.crt"' in text and "tls_disable" not in text
        assert "unauthenticated_metrics_access = true" in text and 'prometheus_retention_time = "24h"' in text
        # Metrics without a token only on the listener the catalog opens to the monitoring guest.
        listeners = text.split('listener "tcp"')[1:]
        open_metrics = [block for block in listeners if "unauthenticated_metrics_access = true" in block]
        assert [block.split('"')[1] for block in open_metrics] == ["10.10.10.111:8210"], open_metrics
        tokened = [block for block in listeners if block not in open_metrics]
        assert len(tokened) == 2 and all("unauthenticated_metrics_access = false" in block for block in tokened)
        assert 'api_addr = "https://vault.your-domain.com:8200"' in text
        assert ('audit "file" "file"' in text) is (flavor == "openbao"), "OpenBao: audit in config"
        assert ("vault-configure-audit-enabled" in high) is (flavor == "vault"), "Vault: audit by API"


def test_certificate_from_the_internal_ca_names_the_guest(vault_high):
    ca = state_args(vault_high["vault-tls-ca-cert-managed"], "local_pki")
    assert ca["ca"] is True and ca["private_key"] == ca["signing_private_key"] == "/etc/vault.d/tls/ca.key"
    assert "signing_cert" not in ca, "the CA certificate is self-signed"
    cert = state_args(vault_high["vault-tls-cert-managed"], "local_pki")
    assert cert["signing_cert"] == ca["name"] and cert["signing_private_key"] == "/etc/vault.d/tls/ca.key"
    assert cert["subject_alt_names"] == ["DNS:vault.your-domain.com", "DNS:vault", "DNS:localhost",
                                         "IP:10.10.10.111", "IP:127.0.0.1"]
    assert cert["extended_key_usage"] == ["serverAuth"] and "ca" not in cert


def test_unit_restarts_on_config_and_certificate_and_unseal_requires_it(vault_high):
    watch = state_args(vault_high["vault-service-running"], "unit")["watch"]
    assert {"file": "vault-config-file-managed"} in watch and {"local_pki": "vault-tls-cert-managed"} in watch
    unseal = state_args(vault_high["vault-unseal-unsealed"], "vault_server")
    assert unseal["url"] == "https://127.0.0.1:8200" and unseal["verify"] == "/etc/vault.d/tls/ca.crt"
    assert unseal["key_files"] == [], "no key share by default: a sealed Vault fails the run"


def test_every_role_and_guest_gets_its_own_policy_and_configuration_requires_unseal(vault_high, example_site):
    for role in ("postgresql", "rabbitmq", "k3s", "chat"):
        rules = state_args(vault_high[f"vault-configure-policy-role-{role}-present"], "vault_server")["rules"]
        assert f'path "secret/data/roles/{role}/*"' in rules
        assert "roles/*" not in rules.replace(f"roles/{role}/*", "")
    for guest in example_site["guests"]:
        rules = state_args(vault_high[f"vault-configure-policy-minion-{guest}-present"], "vault_server")["rules"]
        assert f'path "secret/data/minions/{guest}/*"' in rules
    for state_id, state in vault_high.items():
        if state_id.startswith("vault-configure-") and "vault_server" in state:
            requires = state_args(state, "vault_server")["require"]
            assert any("vault_server" in r for r in requires), state_id


def test_the_masters_policy_reads_the_proxmox_token_secret_and_no_other_secret(vault_high):
    """salt-cloud on the control node reads the token's secret from Vault at run time over the
    master's AppRole (salt_master role, sdb): the site's `proxmox.token_secret` path and nothing else."""
    rules = state_args(vault_high["vault-configure-policy-salt-master-present"], "vault_server")["rules"]
    assert 'path "secret/data/platform/proxmox" { capabilities = ["read"] }' in rules
    assert rules.count("secret/") == 1, rules


def test_a_client_may_read_exactly_the_credentials_the_site_names_it_a_client_of(vault_high):
    def minion_rules(guest: str) -> str:
        return state_args(vault_high[f"vault-configure-policy-minion-{guest}-present"], "vault_server")["rules"]

    chat = minion_rules(guest_with_role(SITE, "chat"))  # databases.chat and messaging.users.chat name it a client
    for path in ("roles/postgresql/users/chat", "roles/rabbitmq/users/chat"):
        assert f'path "secret/data/{path}" {{ capabilities = ["read"] }}' in chat
    assert "users/nextcloud" not in chat and "users/apps" not in chat
    nextcloud = minion_rules(guest_with_role(SITE, "nextcloud"))
    assert 'path "secret/data/roles/postgresql/users/nextcloud" { capabilities = ["read"] }' in nextcloud
    for role in ("reverse_proxy", "vault", "rabbitmq", "postgresql"):
        guest = guest_with_role(SITE, role)
        assert "users/" not in minion_rules(guest), guest


def test_only_the_mail_routes_guest_may_read_its_certificate(vault_high, example_site):
    grant = 'path "secret/data/roles/reverse_proxy/certificates/mail.your-domain.com" { capabilities = ["read"] }'
    for guest in example_site["guests"]:
        rules = state_args(vault_high[f"vault-configure-policy-minion-{guest}-present"], "vault_server")["rules"]
        if guest == "mailcow":
            assert grant in rules
        else:
            assert "certificates/" not in rules, guest


def test_the_certificate_grant_follows_the_mail_route_and_the_challenge(example_site):
    pillar = {"site": example_site}
    assert secret_grants(pillar)["mailcow"] == ["roles/reverse_proxy/certificates/mail.your-domain.com"]
    wildcard = {"site": {**example_site, "acme": {**example_site["acme"], "challenge": "dns-01"}}}
    assert secret_grants(wildcard)["mailcow"] == ["roles/reverse_proxy/certificates/your-domain.com"]
    moved = {**pillar, "reverse_proxy": {"mail_certificate": {"route": "nextcloud"}}}
    grants = secret_grants(moved)
    assert "roles/reverse_proxy/certificates/nextcloud.your-domain.com" in grants["nextcloud"]
    assert "mailcow" not in grants
    gone = {**pillar, "reverse_proxy": {"mail_certificate": {"route": "webmail"}}}
    assert not [p for paths in secret_grants(gone).values() for p in paths if "certificates/" in p]


def test_declared_secrets_are_generated_if_absent(example_config):
    pillar = {"vault": {"secrets": {"roles/postgresql/admin": {"password": {"length": 32, "alphabet": "urlsafe"}}}}}
    high = show(example_config, pillar)
    gen = state_args(high["vault-configure-secret-roles-postgresql-admin-generated"], "vault_server")
    assert gen["__fun__"] == "secret_generated" and gen["mount"] == "secret"
    assert gen["fields"] == {"password": {"length": 32, "alphabet": "urlsafe"}}
    assert "rotate" not in gen


def test_the_vault_pillar_is_validated_with_the_site(example_site):
    import yaml

    from sitectl import ROOT, site

    roles = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    good = {"secrets": {"roles/postgresql/admin": {"password": {"length": 32, "alphabet": "hex"}}},
            "server": {"flavor": "openbao", "binary_source": "salt://lab/openbao/bao"}}
    assert site.validate({"site": example_site, "roles": roles, "vault": good}) == []
    bad = {"secrets": {"roles/postgresql/admin": {"password": {"length": 4, "alphabet": "emoji"}}},
           "server": {"flavor": "openbao", "binary_source": "https://example.org/bao"}}
    errors = site.validate({"site": example_site, "roles": roles, "vault": bad})
    assert "vault.secrets.roles/postgresql/admin.password.alphabet: got 'emoji'; expected one of alphanumeric, " \
           "lowercase, uppercase, hex, urlsafe, printable" in errors
    assert "vault.secrets.roles/postgresql/admin.password.length: got 4; expected a length of 8 or more" in errors
    assert any(e.startswith("vault.server.binary_source: got 'https://example.org/bao'; expected a salt://")
               for e in errors), errors
