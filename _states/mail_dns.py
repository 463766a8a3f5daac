"""
A mail domain's DNS records, published as code.

``records_published`` computes the records of one mail domain (``mail_dns.records``: MX, SPF,
DKIM, DMARC, autoconfig/autodiscover, SRV), with the DKIM key read back from mailcow's API when
the state runs (``mailcow_api.dkim``), and then either

- sends them to the site's DNS server by an RFC 2136 UPDATE signed with the TSIG key read from
  Vault when the state applies (never at render time, never shown): only the RRsets that differ
  are replaced, and RRsets this state published earlier and no longer wants (a DKIM selector that
  changed) are deleted; or
- without a DNS server, writes them as a zone snippet to ``snippet_path`` for a registrar.

What was published is remembered in the minion's cache (``<cachedir>/mail_dns/<domain>.json``):
the names this state owns, so that it deletes only its own records.

.. code-block:: yaml

    mailcow-dns-example.org-published:
      mail_dns.records_published:
        - name: example.org
        - mail_host: mail.example.org
        - dmarc_report: dmarc@example.org
        - server: 10.10.10.1
        - tsig_name: mailcow-update
        - tsig_secret_path: roles/mailcow/dns-tsig
"""

import json
import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "mail_dns"


def __virtual__():
    if "mail_dns.records" not in __salt__:
        return False, "the mail_dns execution module is not available (dnspython)"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _owned_path(domain):
    return os.path.join(__opts__["cachedir"], "mail_dns", f"{domain}.json")


def _owned(domain):
    try:
        with open(_owned_path(domain), encoding="utf-8") as fh:
            return set(json.load(fh))
    except (FileNotFoundError, ValueError):
        return set()


def _remember(domain, keys):
    path = _owned_path(domain)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(f"{path}.new", "w", encoding="utf-8") as fh:
        json.dump(sorted(keys), fh)
    os.replace(f"{path}.new", path)


def _dkim(domain, dkim):
    """The domain's DKIM selector and TXT value: given, or read back from mailcow's API."""
    if dkim is not None:
        return dkim.get("selector"), dkim.get("txt")
    key = __salt__["mailcow_api.dkim"](domain)
    if not key:
        raise CommandExecutionError(f"mailcow has no DKIM key for {domain} (mailcow_api.dkim_present first)")
    return key["dkim_selector"], key["dkim_txt"]


def _snippet(ret, name, wanted, snippet_path, ttl):
    """No DNS server: the records as a zone snippet in ``snippet_path``."""
    text = ("; Managed by Salt (mail_dns.records_published): the DNS records of the mail domain "
            f"{name}.\n; No DNS server is named in the site: publish these at the domain's registrar.\n"
            + __salt__["mail_dns.zone_snippet"](wanted, ttl))
    try:
        with open(snippet_path, encoding="utf-8") as fh:
            old = fh.read()
    except FileNotFoundError:
        old = None
    changes = {} if old == text else {"snippet": {"old": None if old is None else snippet_path, "new": snippet_path}}

    def write():
        os.makedirs(os.path.dirname(snippet_path), mode=0o755, exist_ok=True)
        with open(f"{snippet_path}.new", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(f"{snippet_path}.new", snippet_path)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"the zone snippet of {name} in {snippet_path} is current (no DNS server in the site)",
        planned=f"the zone snippet of {name} would be written to {snippet_path}",
        apply=write,
        done=f"the zone snippet of {name} written to {snippet_path}: publish it at the registrar",
    )


def records_published(name, mail_host, dmarc_report, dmarc_policy="quarantine", server=None, port=53, zone=None,
                      tsig_name=None, tsig_algorithm="hmac-sha256", tsig_secret_path=None, tsig_secret_field="secret",  # noqa: S107
                      mount="secret", ttl=3600, dkim=None, snippet_path=None, timeout=10):
    """
    The DNS records of mail domain ``name`` are published on ``server`` (RFC 2136, TSIG key
    ``tsig_name`` whose secret is the field ``tsig_secret_field`` of the KV v2 secret
    ``tsig_secret_path``), or, without a server, written as a zone snippet to ``snippet_path``.

    ``dkim`` (``{selector, txt}``) stands in for the key read back from mailcow's API.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        selector, dkim_txt = _dkim(name, dkim)
        wanted = __salt__["mail_dns.records"](name, mail_host, dmarc_report, dkim_selector=selector,
                                              dkim_txt=dkim_txt, dmarc_policy=dmarc_policy)
        if not server:
            if not snippet_path:
                raise CommandExecutionError("no DNS server and no snippet_path: nowhere to publish")
            return _snippet(ret, name, wanted, snippet_path, ttl)
        owned = _owned(name)
        stale = sorted(owned - set(wanted))
        current = __salt__["mail_dns.current"](sorted(set(wanted) | set(stale)), server, port=port, timeout=timeout)
        target_zone = zone or __salt__["mail_dns.zone_of"](name, server, port=port, timeout=timeout)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"DNS records of {name}: {exc}")

    replace = {key: values for key, values in wanted.items() if current[key] != values}
    delete = [key for key in stale if current[key]]
    changes = {key: {"old": current[key] or None, "new": values} for key, values in replace.items()}
    changes.update({key: {"old": current[key], "new": None} for key in delete})
    if not __opts__["test"] and not changes:
        _remember(name, wanted)

    def send():
        secret = __salt__["vault_server.secret_read"](tsig_secret_path, tsig_secret_field, mount=mount)
        done = __salt__["mail_dns.update"](target_zone, replace, delete, server, tsig_name, secret,
                                           tsig_algorithm=tsig_algorithm, port=port, ttl=ttl, timeout=timeout)
        _remember(name, wanted)
        return done

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{server} holds the {len(wanted)} record sets of {name}",
        planned=f"{len(replace)} record set(s) of {name} would be replaced and {len(delete)} deleted on {server} "
                f"(zone {target_zone})",
        apply=send,
        done=f"{len(replace)} record set(s) of {name} replaced and {len(delete)} deleted on {server} "
             f"(zone {target_zone}, TSIG key {tsig_name})",
        failure=f"DNS records of {name}: ",
    )
