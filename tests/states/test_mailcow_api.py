"""The ``mailcow_api`` states and module against a double of mailcow's API that follows its published
OpenAPI description (tests/mailcow_double.py; L2, not mailcow), the API key and the mailbox passwords
in a real OpenBao: applied directly and after a dry run, the double read back each time; the real
API's refusals (an unknown domain for a mailbox, a duplicate, a bad key) reach the user in mailcow's
words; the DKIM key read back from the API is the one the DNS state publishes to a real BIND."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from salt.exceptions import CommandExecutionError

from tests.bind import BindServer
from tests.mailcow_double import MailcowDouble
from tests.states.conftest import converges, make_caller, unique

pytestmark = pytest.mark.functional

KEY_PATH = "roles/mailcow/api"


def domain_name() -> str:
    return f"{unique('m').replace('_', '-')}.example.org"


@pytest.fixture(scope="module")
def api_key(bao) -> str:
    key = secrets.token_hex(20)
    bao.client().secrets.kv.v2.create_or_update_secret(path=KEY_PATH, secret={"key": key})
    return key


@pytest.fixture(scope="module")
def mailcow(api_key):
    double = MailcowDouble(api_key).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def mc_caller(states_tmp, bao, bao_token_file, mailcow):
    return make_caller(states_tmp / "salt-mailcow", bao, bao_token_file,
                       {"mailcow_api": {"url": mailcow.url, "key_path": KEY_PATH}})


def state(caller, fun: str, name: str, **kwargs):
    return lambda test: caller.state(f"mailcow_api.{fun}", name, test=test, **kwargs)


def password_in_vault(bao, path: str) -> str:
    value = secrets.token_urlsafe(24)
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"password": value})
    return value


def test_a_domain_is_added_with_its_limits_then_changed(mc_caller, mailcow, testmode):
    domain = domain_name()
    converges(state(mc_caller, "domain_present", domain, description="ops mail", mailboxes=5, quota=4096,
                    maxquota=2048),
              lambda: domain in mailcow.domains,
              {"domain": {"old": None, "new": domain}}, testmode)
    assert mc_caller.cmd("mailcow_api.domains")[domain] == {
        "description": "ops mail", "active": True, "mailboxes": 5, "aliases": 400, "quota": 4096, "maxquota": 2048,
        "defquota": 3072}
    converges(state(mc_caller, "domain_present", domain, description="ops mail", mailboxes=20, quota=4096,
                    maxquota=2048),
              lambda: int(mailcow.domains[domain]["mailboxes"]) == 20,
              {"mailboxes": {"old": 5, "new": 20}}, testmode)


def test_a_mailbox_gets_its_password_from_vault_and_a_rotation_is_applied(mc_caller, mailcow, bao, testmode):
    domain = domain_name()
    mailcow.domains[domain] = {"domain": domain, "description": "", "active": "1", "mailboxes": 10,
                               "aliases": 400, "quota": 10240, "maxquota": 10240, "defquota": 3072}
    address = f"ops@{domain}"
    path = f"roles/mailcow/mailboxes/{address}"
    password = password_in_vault(bao, path)
    where = f"secret/data/{path}"
    converges(state(mc_caller, "mailbox_present", address, full_name="Ops", quota=2048, password_path=path),
              lambda: mailcow.mailboxes.get(address, {}).get("password") == password,
              {"mailbox": {"old": None, "new": address}, "name": {"old": None, "new": "Ops"},
               "quota": {"old": None, "new": 2048}, "active": {"old": None, "new": True},
               "password": {"old": None, "new": f"(from {where})"}},
              testmode, secret_values=(password,))
    sent = json.dumps(mailcow.requests)
    assert password in sent, "the double never received the password"
    rotated = password_in_vault(bao, path)
    converges(state(mc_caller, "mailbox_present", address, full_name="Ops", quota=2048, password_path=path),
              lambda: mailcow.mailboxes[address]["password"] == rotated,
              {"password": {"old": "(set)", "new": f"(version 2 of {where})"}}, testmode,
              secret_values=(password, rotated))


def test_a_mailbox_of_an_unknown_domain_is_refused_in_mailcows_words(mc_caller, mailcow, bao):
    address = f"ops@{domain_name()}"
    path = f"roles/mailcow/mailboxes/{address}"
    password_in_vault(bao, path)
    ret = mc_caller.state("mailcow_api.mailbox_present", address, password_path=path)
    assert ret["result"] is False
    assert "domain_not_found" in ret["comment"], ret["comment"]
    assert address not in mailcow.mailboxes


def test_duplicates_are_refused_by_the_api(mc_caller, mailcow, bao):
    domain = domain_name()
    assert mc_caller.cmd("mailcow_api.domain_add", domain) is True
    with pytest.raises(CommandExecutionError, match=f"add/domain: refused: domain_exists {domain}"):
        mc_caller.cmd("mailcow_api.domain_add", domain)
    password = secrets.token_urlsafe(16)
    assert mc_caller.cmd("mailcow_api.mailbox_add", f"a@{domain}", password) is True
    with pytest.raises(CommandExecutionError, match=f"add/mailbox: refused: object_exists a@{domain}") as refused:
        mc_caller.cmd("mailcow_api.mailbox_add", f"a@{domain}", password)
    assert password not in str(refused.value)
    with pytest.raises(CommandExecutionError, match=f"add/alias: refused: is_alias_or_mailbox a@{domain}"):
        mc_caller.cmd("mailcow_api.alias_add", f"a@{domain}", [f"b@{domain}"])


def test_a_bad_api_key_is_refused_and_not_shown(mc_caller, mailcow, bao, api_key):
    bad = secrets.token_hex(20)
    bao.client().secrets.kv.v2.create_or_update_secret(path=KEY_PATH, secret={"key": bad})
    try:
        ret = mc_caller.state("mailcow_api.domain_present", domain_name())
    finally:
        bao.client().secrets.kv.v2.create_or_update_secret(path=KEY_PATH, secret={"key": api_key})
    assert ret["result"] is False
    assert "the API key was refused (authentication failed)" in ret["comment"], ret["comment"]
    assert bad not in str(ret) and api_key not in str(ret)


def test_a_caller_outside_api_allow_from_is_refused(mc_caller, mailcow):
    mailcow.allow_from = {"10.10.10.110"}
    try:
        ret = mc_caller.state("mailcow_api.domain_present", domain_name())
    finally:
        mailcow.allow_from = {"127.0.0.1"}
    assert ret["result"] is False
    assert "api access denied for ip 127.0.0.1" in ret["comment"], ret["comment"]


def test_an_alias_delivers_to_exactly_its_targets(mc_caller, mailcow, testmode):
    domain = domain_name()
    mc_caller.cmd("mailcow_api.domain_add", domain)
    address = f"abuse@{domain}"
    converges(state(mc_caller, "alias_present", address, goto=[f"ops@{domain}", f"alice@{domain}"]),
              lambda: any(a["address"] == address for a in mailcow.aliases.values()),
              {"alias": {"old": None, "new": address},
               "goto": {"old": None, "new": sorted([f"ops@{domain}", f"alice@{domain}"])},
               "active": {"old": None, "new": True}}, testmode)
    converges(state(mc_caller, "alias_present", address, goto=[f"ops@{domain}"]),
              lambda: any(a["goto"] == f"ops@{domain}" for a in mailcow.aliases.values()),
              {"goto": {"old": sorted([f"ops@{domain}", f"alice@{domain}"]), "new": [f"ops@{domain}"]}}, testmode)


def test_removal_happens_only_through_only_declared(mc_caller, mailcow, bao, testmode):
    keep, drop = domain_name(), domain_name()
    for domain in (keep, drop):
        mc_caller.cmd("mailcow_api.domain_add", domain)
        mc_caller.cmd("mailcow_api.mailbox_add", f"x@{domain}", secrets.token_urlsafe(16))
    mc_caller.cmd("mailcow_api.alias_add", f"y@{drop}", [f"x@{keep}"])
    declared_domains = sorted(set(mailcow.domains) - {drop})
    declared_mailboxes = sorted(set(mailcow.mailboxes) - {f"x@{drop}"})
    declared_aliases = sorted(a["address"] for a in mailcow.aliases.values() if a["address"] != f"y@{drop}")
    converges(state(mc_caller, "only_declared", "undeclared", domains=declared_domains,
                    mailboxes=declared_mailboxes, aliases=declared_aliases),
              lambda: drop not in mailcow.domains,
              {"aliases": {"old": [f"y@{drop}"], "new": []}, "mailboxes": {"old": [f"x@{drop}"], "new": []},
               "domains": {"old": [drop], "new": []}}, testmode)
    assert keep in mailcow.domains and f"x@{keep}" in mailcow.mailboxes


@pytest.mark.parametrize("split", (False, True), ids=("one-string", "split-255"))
def test_the_dkim_key_mailcow_generates_is_the_one_published_in_dns(mc_caller, mailcow, bao, tmp_path, split):
    domain = domain_name()
    mc_caller.cmd("mailcow_api.domain_add", domain)
    mailcow.split_dkim = split
    try:
        converges(state(mc_caller, "dkim_present", domain), lambda: domain in mailcow.dkim,
                  {"dkim": {"old": None, "new": "dkim (2048 bits)"}}, testmode=False)
        bind = BindServer(tmp_path / "bind", zone="example.org", hosts={"mail": "192.0.2.25"}).start()
        try:
            bao.client().secrets.kv.v2.create_or_update_secret(path="roles/mailcow/dns-tsig",
                                                               secret={"secret": bind.key_secret})
            ret = mc_caller.state("mail_dns.records_published", domain, mail_host="mail.example.org",
                                  dmarc_report=f"dmarc@{domain}", server=bind.host, port=bind.port,
                                  tsig_name=bind.key_name, tsig_secret_path="roles/mailcow/dns-tsig")  # noqa: S106 - a path
            assert ret["result"] is True, ret["comment"]
            published = "".join(part.strip('"') for rdata in bind.query(f"dkim._domainkey.{domain}", "TXT")
                                for part in rdata.split('" "'))
        finally:
            bind.stop()
    finally:
        mailcow.split_dkim = False
    assert published.startswith("v=DKIM1;k=rsa;")
    der = base64.b64decode(published.split("p=", 1)[1])
    assert load_der_public_key(der).public_numbers() == mailcow.dkim[domain]["private"].public_key().public_numbers()
