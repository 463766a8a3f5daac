"""
A private CA on one guest, in-process: EC keys and X.509 certificates read and written with
``cryptography``, for the vault role's listener (``salt/vault/tls.sls``, states in
``_states/local_pki.py``); and a certificate's OCSP responder for the reverse proxy's template.

Why not Salt's ``x509_v2`` states: each of them runs ``file.managed`` through a nested
``state.single``, and on a minion (not ``salt-call``) that builds a whole new State, whose first
act is to ask the master for this guest's pillar again. Four such states made the vault guest's
no-op highstate about 1.7 s longer, with four pillar compiles on the master besides. Here a no-op
reads three small files and stats them.

Files are written atomically (a temporary file in the same directory, created with the final mode
and owner, then renamed over the target), so a reader never sees half a key or a certificate.
Nothing here returns or logs a private key.
"""

import datetime
import hashlib
import ipaddress

from salt.exceptions import CommandExecutionError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - Salt itself needs cryptography
    HAS_CRYPTOGRAPHY = False

__virtualname__ = "local_pki"

CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
# The names of RFC 5280 (as openssl and Salt's x509 states write them) and cryptography's.
KEY_USAGES = {"digitalSignature": "digital_signature", "nonRepudiation": "content_commitment",
              "keyEncipherment": "key_encipherment", "dataEncipherment": "data_encipherment",
              "keyAgreement": "key_agreement", "keyCertSign": "key_cert_sign", "cRLSign": "crl_sign"}
EXTENDED_KEY_USAGES = ("serverAuth", "clientAuth")


def __virtual__():
    if not HAS_CRYPTOGRAPHY:
        return False, "local_pki needs the cryptography package"
    return __virtualname__


# ---------------------------------------------------------------- files (_utils/platform_files.py)


def attribute_changes(path, user, group, mode):
    """Owner, group and mode of ``path`` that differ from those asked (``{attribute: {old, new}}``)."""
    return __utils__["platform_files.attribute_changes"](path, user, group, mode)


def set_attributes(path, user, group, mode):
    """Give ``path`` its owner, group and mode."""
    return __utils__["platform_files.set_attributes"](path, user, group, mode)


def _write(path, data, user, group, mode):
    return __utils__["platform_files.write_atomic"](path, data, user, group, mode)


# ---------------------------------------------------------------- keys


def _read(path):
    """The bytes at ``path``, or None when there is no file."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandExecutionError(f"{path}: {exc.strerror}") from None


def _load_key(path):
    data = _read(path)
    if data is None:
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CommandExecutionError(
            f"{path} is not an unencrypted PEM private key; it is left as it is (move it away to "
            "have a new one made)") from None


def key_info(path):
    """What the private key at ``path`` is: ``{'curve': ...}`` (``'rsa-<bits>'`` or the type for
    another kind), or None when there is no file. An unreadable file is an error, never replaced."""
    key = _load_key(path)
    if key is None:
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"curve": key.curve.name}
    size = getattr(key, "key_size", None)
    return {"curve": f"{type(key).__name__}{'-' + str(size) if size else ''}"}


def create_key(path, curve="secp256r1", user="root", group="root", mode="0600"):
    """A new EC private key on ``curve`` at ``path`` (replacing what is there)."""
    if curve not in CURVES:
        raise CommandExecutionError(f"curve {curve!r}: expected one of {', '.join(CURVES)}")
    key = ec.generate_private_key(getattr(ec, curve.upper())())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return _write(path, pem, user, group, mode)


# ---------------------------------------------------------------- certificates


def _san_entries(names):
    entries = []
    for entry in names or []:
        kind, _, value = str(entry).partition(":")
        if kind == "DNS" and value:
            entries.append(x509.DNSName(value))
        elif kind == "IP" and value:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                raise CommandExecutionError(f"subject_alt_names: {entry!r} is not an IP address") from None
        else:
            raise CommandExecutionError(f"subject_alt_names: {entry!r}: expected DNS:<name> or IP:<address>")
    return entries


def _san_strings(entries):
    out = []
    for entry in entries:
        if isinstance(entry, x509.DNSName):
            out.append(f"DNS:{entry.value}")
        elif isinstance(entry, x509.IPAddress):
            out.append(f"IP:{entry.value}")
        else:
            out.append(str(entry))
    return sorted(set(out))


def _fingerprint(public_key):
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _extension(cert, kind):
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _issuer(signing_private_key, signing_cert):
    """(issuer key, issuer name or None for self-signed, issuer certificate or None)."""
    issuer_key = _load_key(signing_private_key)
    if issuer_key is None:
        raise CommandExecutionError(f"the signing key {signing_private_key} does not exist")
    if not signing_cert:
        return issuer_key, None, None
    try:
        with open(signing_cert, "rb") as fh:
            ca = x509.load_pem_x509_certificate(fh.read())
    except FileNotFoundError:
        raise CommandExecutionError(f"the signing certificate {signing_cert} does not exist") from None
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"the signing certificate {signing_cert}: {exc}") from None
    if _fingerprint(ca.public_key()) != _fingerprint(issuer_key.public_key()):
        raise CommandExecutionError(f"the signing certificate {signing_cert} is not of the key {signing_private_key}")
    return issuer_key, ca.subject, ca


def certificate_info(path, private_key, signing_private_key, signing_cert=None):
    """What the certificate at ``path`` says, as the state compares it, or None when there is none:
    subject CN, subject_alt_names, ca, key_usage, extended_key_usage, days_remaining, whether it
    is of ``private_key`` (``key_matches``) and whether the issuer (``signing_cert`` with
    ``signing_private_key``, or that key itself for a self-signed one) signed it (``issued_by``)."""
    data = _read(path)
    if data is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        return {"readable": False}
    own_key = _load_key(private_key)
    issuer_key, _, ca = _issuer(signing_private_key, signing_cert)
    try:  # the issuer's name and its key's signature (a self-signed one: by the signing key itself)
        cert.verify_directly_issued_by(ca or cert)
        issued_by = ca is not None or _fingerprint(cert.public_key()) == _fingerprint(issuer_key.public_key())
    except (InvalidSignature, ValueError, TypeError):
        issued_by = False
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    san = _extension(cert, x509.SubjectAlternativeName)
    basic = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    eku_names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    not_after = cert.not_valid_after_utc
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "readable": True,
        "CN": cn[0].value if cn else None,
        "subject_alt_names": _san_strings(san.value) if san else [],
        "ca": bool(basic and basic.value.ca),
        "key_usage": sorted(u for u, attr in KEY_USAGES.items() if usage and _usage(usage.value, attr)),
        "extended_key_usage": sorted(eku_names.get(oid, oid.dotted_string) for oid in (eku.value if eku else [])),
        "key_matches": own_key is not None and _fingerprint(cert.public_key()) == _fingerprint(own_key.public_key()),
        "issued_by": issued_by,
        "not_after": not_after.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "days_remaining": (not_after - now).days,
    }


def _usage(value, name):
    try:
        return bool(getattr(value, name))
    except ValueError:  # encipher_only/decipher_only without key_agreement
        return False


def issue_certificate(path, private_key, signing_private_key, CN, signing_cert=None, subject_alt_names=(),
                      ca=False, key_usage=(), extended_key_usage=(), days_valid=365,
                      user="root", group="root", mode="0644"):
    """Issue a certificate for ``private_key``'s public key, signed by ``signing_private_key``
    (with ``signing_cert`` as the issuer; self-signed without it), and write it to ``path``.
    Returns its expiry."""
    own_key = _load_key(private_key)
    if own_key is None:
        raise CommandExecutionError(f"the private key {private_key} does not exist")
    issuer_key, issuer_name, _ = _issuer(signing_private_key, signing_cert)
    unknown = [u for u in key_usage if u not in KEY_USAGES]
    unknown += [u for u in extended_key_usage if u not in EXTENDED_KEY_USAGES]
    if unknown:
        raise CommandExecutionError(f"unknown key usage: {', '.join(unknown)}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(CN))])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name if issuer_name is not None else subject)
        .public_key(own_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of clients a little behind
        .not_valid_after(now + datetime.timedelta(days=int(days_valid)))
        .add_extension(x509.BasicConstraints(ca=bool(ca), path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(own_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if key_usage:
        flags = {attr: u in key_usage for u, attr in KEY_USAGES.items()}
        builder = builder.add_extension(x509.KeyUsage(**flags, encipher_only=False, decipher_only=False),
                                        critical=True)
    if extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if u == "serverAuth"
                                   else ExtendedKeyUsageOID.CLIENT_AUTH for u in extended_key_usage]),
            critical=False)
    if subject_alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san_entries(subject_alt_names)), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    _write(path, cert.public_bytes(serialization.Encoding.PEM), user, group, mode)
    return cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")


def ocsp_uri(path):
    """The OCSP responder the first certificate in ``path`` names (its Authority Information Access),
    or ``''`` when it names none: what ``openssl x509 -noout -ocsp_uri`` prints, without a process
    (the reverse proxy's TLS template asks this for every route on every run)."""
    try:
        with open(path, "rb") as fh:
            certs = x509.load_pem_x509_certificates(fh.read())
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"{path}: {exc}") from None
    access = _extension(certs[0], x509.AuthorityInformationAccess)
    for description in access.value if access else []:
        if description.access_method == AuthorityInformationAccessOID.OCSP:
            return description.access_location.value
    return ""
