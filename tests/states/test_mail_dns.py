"""The ``mail_dns`` state against a real BIND 9 started by the test on loopback: the mail domain's
records are published by RFC 2136 updates signed with a TSIG key read from a real OpenBao, a client
resolves them afterwards, a second run changes nothing, a changed DKIM key replaces the old record,
a wrong key changes nothing, and without a DNS server the records become a zone snippet."""

from __future__ import annotations

import base64
import secrets

import pytest

from tests.bind import BindServer
from tests.states.conftest import converges, make_caller, unique

pytestmark = pytest.mark.functional

MAIL_HOST = "mail.example.org"


@pytest.fixture(scope="module")
def bind(tmp_path_factory):
    server = BindServer(tmp_path_factory.mktemp("bind"), zone="example.org", hosts={"mail": "192.0.2.25"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dns_caller(states_tmp, bao, bao_token_file):
    return make_caller(states_tmp / "salt-mail-dns", bao, bao_token_file)


@pytest.fixture(scope="module")
def tsig_path(bao, bind) -> str:
    path = "roles/mailcow/dns-tsig"
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"secret": bind.key_secret})
    return path


def dkim_key() -> dict:
    """A DKIM TXT value in mailcow's form, with a (random, not a real RSA) key longer than 255 octets."""
    pubkey = base64.b64encode(secrets.token_bytes(294)).decode()
    return {"selector": "dkim", "txt": f"v=DKIM1;k=rsa;t=s;s=email;p={pubkey}"}


def publish(caller, bind, domain, tsig_path, dkim, **extra):
    kwargs = {"mail_host": MAIL_HOST, "dmarc_report": f"dmarc@{domain}", "server": bind.host, "port": bind.port,
              "tsig_name": bind.key_name, "tsig_secret_path": tsig_path, "dkim": dkim, **extra}
    return lambda test: caller.state("mail_dns.records_published", domain, test=test, **kwargs)


def txt_of(rdatas: list[str]) -> str:
    """A TXT record's character-strings joined, as a DKIM or DMARC verifier reads them."""
    return "".join(part.strip('"') for rdata in rdatas for part in rdata.split('" "'))


def test_the_records_are_published_signed_and_resolvable(dns_caller, bind, tsig_path, testmode):
    domain = f"{unique('d').replace('_', '-')}.example.org"
    dkim = dkim_key()
    records = dns_caller.cmd("mail_dns.records", domain, MAIL_HOST, f"dmarc@{domain}",
                             dkim_selector="dkim", dkim_txt=dkim["txt"])
    rets = converges(publish(dns_caller, bind, domain, tsig_path, dkim),
                     lambda: bool(bind.query(domain, "MX")),
                     {key: {"old": None, "new": values} for key, values in records.items()},
                     testmode, secret_values=(bind.key_secret,))
    assert "TSIG key mailcow-update" in rets[-2]["comment"]
    assert bind.query(domain, "MX") == [f"10 {MAIL_HOST}."]
    assert txt_of(bind.query(domain, "TXT")) == "v=spf1 mx a -all"
    assert txt_of(bind.query(f"dkim._domainkey.{domain}", "TXT")) == dkim["txt"]
    assert txt_of(bind.query(f"_dmarc.{domain}", "TXT")) == f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"
    assert bind.query(f"autodiscover.{domain}", "CNAME") == [f"{MAIL_HOST}."]
    assert bind.query(f"autoconfig.{domain}", "CNAME") == [f"{MAIL_HOST}."]
    assert bind.query(f"_submission._tcp.{domain}", "SRV") == [f"0 1 587 {MAIL_HOST}."]
    assert bind.query(f"_imaps._tcp.{domain}", "SRV") == [f"0 1 993 {MAIL_HOST}."]


def test_a_changed_dkim_key_replaces_the_old_record_and_a_new_selector_removes_the_old_one(
        dns_caller, bind, tsig_path, testmode):
    domain = f"{unique('d').replace('_', '-')}.example.org"
    old = dkim_key()
    first = publish(dns_caller, bind, domain, tsig_path, old)(test=False)
    assert first["result"] is True, first["comment"]
    new = dkim_key()
    key = f"dkim._domainkey.{domain}. TXT"
    wanted = dns_caller.cmd("mail_dns.records", domain, MAIL_HOST, f"dmarc@{domain}",
                            dkim_selector="dkim", dkim_txt=new["txt"])[key]
    converges(publish(dns_caller, bind, domain, tsig_path, new),
              lambda: txt_of(bind.query(f"dkim._domainkey.{domain}", "TXT")) == new["txt"],
              {key: {"old": bind.query(f"dkim._domainkey.{domain}", "TXT"), "new": wanted}}, testmode)

    rotated = {"selector": "dkim2026", "txt": dkim_key()["txt"]}
    applied = publish(dns_caller, bind, domain, tsig_path, rotated)(test=False)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"][key]["new"] is None, "the old selector's record was not deleted"
    assert bind.query(f"dkim._domainkey.{domain}", "TXT") == []
    assert txt_of(bind.query(f"dkim2026._domainkey.{domain}", "TXT")) == rotated["txt"]
    again = publish(dns_caller, bind, domain, tsig_path, rotated)(test=False)
    assert again["changes"] == {}, again["changes"]


def test_a_wrong_tsig_key_changes_nothing(dns_caller, bind, bao):
    domain = f"{unique('d').replace('_', '-')}.example.org"
    path = f"roles/mailcow/{unique('wrong-tsig')}"
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"secret": wrong})
    ret = publish(dns_caller, bind, domain, path, dkim_key())(test=False)
    assert ret["result"] is False
    assert "TSIG" in ret["comment"] or "NOTAUTH" in ret["comment"], ret["comment"]
    assert wrong not in str(ret)
    assert ret["changes"] == {}
    assert bind.query(domain, "MX") == []


def test_without_a_dns_server_the_records_become_a_zone_snippet(dns_caller, tmp_path, testmode):
    domain = "snippet.example.net"
    snippet = tmp_path / "dns" / f"{domain}.zone"
    dkim = dkim_key()
    state = lambda test: dns_caller.state(  # noqa: E731
        "mail_dns.records_published", domain, test=test, mail_host=MAIL_HOST, dmarc_report=f"dmarc@{domain}",
        dkim=dkim, snippet_path=str(snippet))
    converges(state, snippet.is_file, {"snippet": {"old": None, "new": str(snippet)}}, testmode)
    text = snippet.read_text()
    assert f"{domain}. 3600 IN MX 10 {MAIL_HOST}." in text
    assert f"_dmarc.{domain}. 3600 IN TXT" in text
    assert dkim["txt"][:200] in text
