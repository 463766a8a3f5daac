"""
The DNS records a mail domain needs, and their publication by RFC 2136 dynamic updates signed
with TSIG (dnspython).

``records`` computes them from the site's facts and the domain's DKIM key (which the caller reads
back from mailcow's API): MX, SPF, DKIM, DMARC with its report address, the ``autoconfig`` and
``autodiscover`` names, and the SRV (and DAV path TXT) records mailcow's documentation lists for
the services the platform opens. ``current`` asks the domain's authoritative server what it holds,
``update`` replaces whole RRsets (and deletes the ones named) in one signed UPDATE message, and
``zone_snippet`` prints the records in zone-file form for a site without a DNS server of its own.

The TSIG secret is passed in by the state that read it from Vault; it is never returned, logged
or put on a command line.
"""

import logging

from salt.exceptions import CommandExecutionError

try:
    import dns.exception
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.tsigkeyring
    import dns.update

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

log = logging.getLogger(__name__)

__virtualname__ = "mail_dns"

# RFC 6186 / RFC 6764 services mailcow's DNS documentation lists, limited to those the platform
# serves: IMAPS and submission (587, 465) on the mail guest, autodiscover and the DAV services
# through the reverse proxy's HTTPS.
SERVICES = (
    ("_autodiscover._tcp", 443),
    ("_caldavs._tcp", 443),
    ("_carddavs._tcp", 443),
    ("_imaps._tcp", 993),
    ("_submission._tcp", 587),
    ("_submissions._tcp", 465),
)
DAV_PATH = '"path=/SOGo/dav/"'
# A TXT character-string holds at most 255 octets (RFC 1035 3.3).
_CHUNK = 255


def __virtual__():
    if not HAS_DNSPYTHON:
        return False, "mail_dns needs dnspython"
    return __virtualname__


def _txt(text):
    """``text`` as TXT rdata: quoted character-strings of at most 255 octets."""
    chunks = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def _fqdn(name):
    return name if name.endswith(".") else f"{name}."


def records(domain, mail_host, dmarc_report, dkim_selector=None, dkim_txt=None, dmarc_policy="quarantine",
            spf="v=spf1 mx a -all"):
    """
    The records of mail domain ``domain`` served by ``mail_host``: a mapping ``"<name> <TYPE>"`` ->
    list of rdata texts (names absolute, with the trailing dot). ``dkim_txt`` is the key's TXT
    value as mailcow gives it (``v=DKIM1;k=rsa;...``); without it no DKIM record is listed.

    CLI Example:

    .. code-block:: bash

        salt mailcow mail_dns.records example.org mail.example.org dmarc@example.org
    """
    zone, host = _fqdn(domain), _fqdn(mail_host)
    out = {
        f"{zone} MX": [f"10 {host}"],
        f"{zone} TXT": [_txt(spf)],
        f"_dmarc.{zone} TXT": [_txt(f"v=DMARC1; p={dmarc_policy}; rua=mailto:{dmarc_report}")],
        f"autoconfig.{zone} CNAME": [host],
        f"autodiscover.{zone} CNAME": [host],
    }
    for service, port in SERVICES:
        out[f"{service}.{zone} SRV"] = [f"0 1 {port} {host}"]
    for service in ("_caldavs._tcp", "_carddavs._tcp"):
        out[f"{service}.{zone} TXT"] = [DAV_PATH]
    if dkim_selector and dkim_txt:
        out[f"{dkim_selector}._domainkey.{zone} TXT"] = [_txt(dkim_txt)]
    return {key: _canonical(key, values) for key, values in sorted(out.items())}


def _canonical(key, values):
    """``values`` as dnspython writes them back (so that wanted and current compare as text)."""
    rdtype = dns.rdatatype.from_text(key.rsplit(" ", 1)[1])
    try:
        return sorted(dns.rdata.from_text(dns.rdataclass.IN, rdtype, v).to_text() for v in values)
    except dns.exception.DNSException as exc:
        raise CommandExecutionError(f"{key}: invalid record data ({exc})") from None


def zone_snippet(wanted, ttl=3600):
    """The records ``wanted`` (as ``records`` returns them) in zone-file form, for a registrar."""
    lines = [f"{key.rsplit(' ', 1)[0]} {int(ttl)} IN {key.rsplit(' ', 1)[1]} {value}"
             for key, values in sorted(wanted.items()) for value in values]
    return "\n".join(lines) + "\n"


def _keyring(tsig_name, tsig_secret, tsig_algorithm):
    try:
        keyring = dns.tsigkeyring.from_text({tsig_name: tsig_secret})
    except (ValueError, dns.exception.DNSException) as exc:
        raise CommandExecutionError(f"the TSIG key {tsig_name} is not a base64 secret ({type(exc).__name__})") from None
    return keyring, dns.name.from_text(tsig_name), dns.name.from_text(tsig_algorithm)


def _ask(message, server, port, timeout):
    try:
        return dns.query.tcp(message, server, port=int(port), timeout=float(timeout))
    except dns.tsig.PeerError as exc:
        raise CommandExecutionError(f"{server}:{port} refused the TSIG key ({type(exc).__name__})") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise CommandExecutionError(f"DNS server {server}:{port} did not answer ({type(exc).__name__}: {exc})") \
            from None


def zone_of(domain, server, port=53, timeout=10):
    """The zone that holds ``domain`` on ``server``: the closest enclosing name with an SOA there."""
    name = dns.name.from_text(domain)
    while len(name) > 1:
        reply = _ask(dns.message.make_query(name, dns.rdatatype.SOA), server, port, timeout)
        if reply.rcode() == dns.rcode.NOERROR and any(
                rrset.rdtype == dns.rdatatype.SOA and rrset.name == name for rrset in reply.answer):
            return name.to_text()
        name = name.parent()
    raise CommandExecutionError(f"{server}:{port} is not authoritative for any zone holding {domain}")


def current(keys, server, port=53, timeout=10):
    """
    What ``server`` holds for each of ``keys`` (``"<name> <TYPE>"``): a mapping key -> sorted rdata
    texts, an empty list where the server has none.

    CLI Example:

    .. code-block:: bash

        salt mailcow mail_dns.current '["example.org. MX"]' 10.10.10.1
    """
    out = {}
    for key in keys:
        owner, rdtype = key.rsplit(" ", 1)
        reply = _ask(dns.message.make_query(owner, rdtype), server, port, timeout)
        if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise CommandExecutionError(f"{server}:{port} answered {dns.rcode.to_text(reply.rcode())} for {key}")
        found = [rrset for rrset in reply.answer
                 if rrset.name == dns.name.from_text(owner) and rrset.rdtype == dns.rdatatype.from_text(rdtype)]
        out[key] = sorted(rdata.to_text() for rrset in found for rdata in rrset)
    return out


def update(zone, replace, delete, server, tsig_name, tsig_secret, tsig_algorithm="hmac-sha256", port=53, ttl=3600,
           timeout=10):
    """
    One signed RFC 2136 UPDATE of ``zone`` on ``server``: each RRset of ``replace`` (key -> rdata
    texts) replaces what the server has for that name and type, each key of ``delete`` is removed.
    Raises ``CommandExecutionError`` with the server's response code (NOTAUTH: the key is unknown
    or refused; REFUSED: the zone's update policy does not allow it).
    """
    keyring, keyname, algorithm = _keyring(tsig_name, tsig_secret, tsig_algorithm)
    message = dns.update.UpdateMessage(zone, keyring=keyring, keyname=keyname, keyalgorithm=algorithm)
    for key, values in sorted(replace.items()):
        owner, rdtype = key.rsplit(" ", 1)
        message.replace(owner, int(ttl), *(dns.rdata.from_text(dns.rdataclass.IN, rdtype, v) for v in values))
    for key in sorted(delete):
        owner, rdtype = key.rsplit(" ", 1)
        message.delete(owner, rdtype)
    reply = _ask(message, server, port, timeout)
    rcode = reply.rcode()
    if rcode != dns.rcode.NOERROR:
        raise CommandExecutionError(f"{server}:{port} refused the update of {zone} with the TSIG key {tsig_name}: "
                                    f"{dns.rcode.to_text(rcode)}")
    log.info("mail_dns: %s on %s: %d RRset(s) replaced, %d deleted", zone, server, len(replace), len(delete))
    return {"zone": zone, "replaced": sorted(replace), "deleted": sorted(delete)}
