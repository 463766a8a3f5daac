"""The mailcow role rendered for the example site and with the lab overlay (no daemon; mailcow's
images are unreachable here, so this and the modules' tests against a schema-faithful double and a
real BIND are as far as the stack itself is verified: L1 for the stack, L2 for its API)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from sitectl import ROOT, render, sitefile
from sitectl import site as site_of
from tests.conftest import make_checkout, state_args

pytestmark = pytest.mark.render

GUEST = "mailcow"


@pytest.fixture(scope="module")
def high(example_config):
    out = render.caller(example_config, GUEST).cmd("state.show_sls", "mailcow")
    assert isinstance(out, dict), out
    return out


@pytest.fixture(scope="module")
def lab_high(tmp_path_factory):
    _, config = make_checkout(tmp_path_factory.mktemp("mailcow-lab"), overlay="lab")
    out = render.caller(config, GUEST).cmd("state.show_highstate")
    assert isinstance(out, dict), out
    return out


def rendered_conf(config, high) -> str:
    caller = render.caller(config, GUEST)
    conf = state_args(high["mailcow-config-file-managed"], "file")
    template = open(caller.cmd("cp.cache_file", conf["source"])).read()
    # The secrets are read from Vault when the state applies; here they stand as markers.
    marker = "{%- macro vault_read(path, field, mount=None) %}VAULT:{{ path }}#{{ field }}{%- endmacro %}\n"
    template = marker + template.replace("salt['vault_server.secret_read']", "vault_read")
    return caller.cmd("file.apply_template_on_contents", template, "jinja", conf["context"], None, "base")


def conf_keys(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_mailcow_conf_is_the_sites(example_config, high):
    keys = conf_keys(rendered_conf(example_config, high))
    assert keys["MAILCOW_HOSTNAME"] == "mail.your-domain.com"
    assert keys["TZ"] == "Europe/Moscow"
    # The web UI in plain HTTP on the internal address, at the port of the proxy's route.
    assert (keys["HTTP_BIND"], keys["HTTP_PORT"]) == ("10.10.10.104", "8080")
    assert (keys["HTTPS_BIND"], keys["HTTP_REDIRECT"]) == ("127.0.0.1", "n")
    assert keys["SKIP_LETS_ENCRYPT"] == "y"
    # The API key from Vault, accepted from the master and from the guest itself only.
    assert keys["API_KEY"] == "VAULT:roles/mailcow/api#key"
    assert keys["API_ALLOW_FROM"] == "10.10.10.110,172.22.1.1"
    for key in ("DBPASS", "DBROOT", "REDISPASS", "SOGO_URL_ENCRYPTION_KEY"):
        assert keys[key].startswith("VAULT:roles/mailcow/stack#"), key
    # The public mail ports from the role catalog; what the platform does not serve on loopback.
    assert (keys["SMTP_PORT"], keys["SMTPS_PORT"], keys["SUBMISSION_PORT"], keys["IMAPS_PORT"]) == \
        ("25", "465", "587", "993")
    assert keys["IMAP_PORT"] == "127.0.0.1:143" and keys["POP_PORT"] == "127.0.0.1:110"


def test_no_secret_is_in_the_compiled_states(high):
    config = state_args(high["mailcow-config-file-managed"], "file")
    assert config["show_changes"] is False and config["mode"] == "0600"
    text = json.dumps(high)
    assert "vault:" not in text  # references are resolved to paths, never to values


def test_the_checkout_is_pinned_and_the_stack_moves_with_the_pin(high):
    checkout = state_args(high["mailcow-checkout-latest"], "git")
    defaults = yaml.safe_load((ROOT / "salt/mailcow/defaults.yaml").read_text())["mailcow"]
    assert checkout["rev"] == defaults["version"]
    pull = state_args(high["mailcow-stack-images-pulled"], "cmd")
    up = state_args(high["mailcow-stack-up"], "cmd")
    assert pull["onchanges"] == [{"git": "mailcow-checkout-latest"}]
    assert {"git": "mailcow-checkout-latest"} in up["onchanges"]
    assert {"file": "mailcow-config-file-managed"} in up["onchanges"]
    assert up["name"] == "docker compose --project-directory /opt/mailcow-dockerized up --detach --remove-orphans"


def test_mailboxes_get_vault_passwords_and_aliases_come_from_the_site(high):
    box = state_args(high["mailcow-mail-mailbox-ops@your-domain.com-present"], "mailcow_api")
    assert box["password_path"] == "roles/mailcow/mailboxes/your-domain.com/ops"  # noqa: S105 - a path
    generated = state_args(high["mailcow-mail-mailbox-ops@your-domain.com-secret-generated"], "vault_server")
    assert generated["name"] == box["password_path"]
    alias = state_args(high["mailcow-mail-alias-abuse@your-domain.com-present"], "mailcow_api")
    assert alias["goto"] == ["postmaster@your-domain.com"]
    assert "mailcow-mail-undeclared-absent" not in high, "removal without the site saying so"


def test_dns_records_go_to_the_sites_server_with_the_tsig_path(high):
    dns = state_args(high["mailcow-dns-your-domain.com-published"], "mail_dns")
    assert (dns["server"], dns["port"], dns["tsig_name"]) == ("10.10.10.1", 53, "mailcow-update")
    assert (dns["tsig_secret_path"], dns["tsig_secret_field"]) == ("roles/mailcow/dns-tsig", "secret")
    assert dns["dmarc_report"] == "dmarc-reports@your-domain.com"
    assert dns["mail_host"] == "mail.your-domain.com"
    assert {"mailcow_api": "mailcow-mail-domain-your-domain.com-dkim-present"} in dns["require"]


def test_without_a_dns_server_a_zone_snippet_and_removal_when_the_site_says_so(tmp_path):
    site_file = ROOT / "pillar/site/example.sls"
    data = yaml.safe_load(site_file.read_text())
    del data["site"]["mail"]["dns"]
    data["site"]["mail"]["remove_undeclared"] = True
    changed = tmp_path / "site.sls"
    changed.write_text(yaml.safe_dump(data))
    _, config = make_checkout(tmp_path / "co", site_file=changed)
    out = render.caller(config, GUEST).cmd("state.show_sls", "mailcow")
    assert isinstance(out, dict), out
    dns = state_args(out["mailcow-dns-your-domain.com-published"], "mail_dns")
    assert dns["snippet_path"] == "/etc/mailcow-platform/dns/your-domain.com.zone" and "server" not in dns
    undeclared = state_args(out["mailcow-mail-undeclared-absent"], "mailcow_api")
    assert undeclared["mailboxes"] == ["ops@your-domain.com", "postmaster@your-domain.com"]
    assert undeclared["aliases"] == ["abuse@your-domain.com", "dmarc-reports@your-domain.com",
                                     "hostmaster@your-domain.com"]


def test_the_mail_certificate_is_installed_where_mailcow_reads_it(high):
    cert = state_args(high["mailcow-certificate-installed"], "certificate_handover")
    assert cert["name"] == "roles/reverse_proxy/certificates/mail.your-domain.com"
    assert cert["destinations"]["cert"]["path"] == "/opt/mailcow-dockerized/data/assets/ssl/cert.pem"
    assert cert["reload_cmd"][-3:] == ["postfix-mailcow", "dovecot-mailcow", "nginx-mailcow"]


def test_in_the_lab_only_what_needs_no_mailcow_image_runs(lab_high):
    sls = {state["__sls__"] for state in lab_high.values() if isinstance(state, dict)}
    assert {"mailcow.certificate", "docker.package", "docker.service"} <= sls
    assert not sls & {"mailcow.python", "mailcow.checkout", "mailcow.config", "mailcow.stack", "mailcow.mail",
                      "mailcow.dns"}
    cert = state_args(lab_high["mailcow-certificate-installed"], "certificate_handover")
    assert cert["reload_cmd"] is None


def test_site_mail_is_checked(tmp_path):
    pillar = copy.deepcopy(sitefile.load(ROOT / "pillar/site/example.sls"))
    pillar["roles"] = sitefile.load(ROOT / "pillar/platform/roles.sls")["roles"]
    mail = pillar["site"]["mail"]
    mail["domains"]["your-domain.com"]["aliases"]["ops"] = ["postmaster@your-domain.com"]
    mail["dns"]["tsig_secret"] = "vault:roles/reverse_proxy/acme-tsig#secret"  # noqa: S105 - a reference
    errors = site_of.validate(pillar)
    assert "site.mail.domains.your-domain.com.aliases.ops: ops@your-domain.com is also a mailbox" in "\n".join(errors)
    assert any(e.startswith("site.mail.dns.tsig_secret: roles/reverse_proxy/acme-tsig is outside roles/mailcow/")
               for e in errors), errors
