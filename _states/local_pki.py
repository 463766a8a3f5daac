"""
A private CA's keys and certificates on one guest (``_modules/local_pki.py``): the vault role's
listener (``salt/vault/tls.sls``).

.. code-block:: yaml

    ca-key:
      local_pki.private_key_managed:
        - name: /etc/openbao/tls/ca.key
        - curve: secp384r1

    ca-cert:
      local_pki.certificate_managed:
        - name: /etc/openbao/tls/ca.crt
        - private_key: /etc/openbao/tls/ca.key
        - signing_private_key: /etc/openbao/tls/ca.key      # self-signed: no signing_cert
        - CN: vault internal CA
        - ca: true
        - key_usage: [keyCertSign, cRLSign]
        - days_valid: 3650

A certificate is issued again when anything it should say differs from what it says: its CN, its
subject alternative names, CA or not, its key usages, its key (``private_key``), its issuer (the
signing certificate's name and the signing key's signature), or fewer than ``days_remaining``
days left. Owner, group and mode are set in place when only they differ. A key is made again only
when it is on another curve than asked; a file that is not an unencrypted PEM key fails the state
and stays as it is.
"""

from salt.exceptions import CommandExecutionError


def _set_attributes(name, user, group, mode):
    return __salt__["local_pki.set_attributes"](name, user, group, mode)


def private_key_managed(name, curve="secp256r1", user="root", group="root", mode="0600"):
    """An EC private key on ``curve`` at ``name`` (never shown), with its owner and mode."""
    ret = __utils__["platform_state.new"](name)
    try:
        have = __salt__["local_pki.key_info"](name)
        changes = __salt__["local_pki.attribute_changes"](name, user, group, mode)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    if have is None:
        changes = {"private_key": {"old": None, "new": f"new {curve} key"}}
    elif have["curve"] != curve:
        changes = {"private_key": {"old": have["curve"], "new": f"new {curve} key"}}
    make = "private_key" in changes
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"the {curve} private key {name} is as it should be",
        planned=f"{'a new private key would be written to' if make else 'the owner or mode would be set on'} {name}",
        apply=lambda: (__salt__["local_pki.create_key"](name, curve, user, group, mode) if make
                       else _set_attributes(name, user, group, mode)),
        done=f"{'a new private key was written to' if make else 'the owner or mode was set on'} {name}",
        failure=f"{name}: ",
    )


def certificate_managed(name, private_key, signing_private_key, CN, signing_cert=None, subject_alt_names=(),
                        ca=False, key_usage=(), extended_key_usage=(), days_valid=365, days_remaining=30,
                        user="root", group="root", mode="0644"):
    """A certificate at ``name`` for ``private_key``, issued by ``signing_cert`` with
    ``signing_private_key`` (self-signed without ``signing_cert``), saying what is asked."""
    ret = __utils__["platform_state.new"](name)
    want = {
        "CN": str(CN),
        "subject_alt_names": sorted({str(s).strip() for s in subject_alt_names}),
        "ca": bool(ca),
        "key_usage": sorted(set(key_usage)),
        "extended_key_usage": sorted(set(extended_key_usage)),
    }
    try:
        have = __salt__["local_pki.certificate_info"](name, private_key, signing_private_key, signing_cert)
        attributes = __salt__["local_pki.attribute_changes"](name, user, group, mode)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    reasons = {}
    if have is None:
        reasons["certificate"] = {"old": None, "new": f"issued for {CN}"}
    elif not have["readable"]:
        reasons["certificate"] = {"old": "not a PEM certificate", "new": f"issued for {CN}"}
    else:
        reasons.update({k: {"old": have[k], "new": v} for k, v in want.items() if have[k] != v})
        if not have["key_matches"]:
            reasons["private_key"] = {"old": "another key", "new": private_key}
        if not have["issued_by"]:
            reasons["issuer"] = {"old": "another issuer", "new": signing_cert or "self-signed"}
        if have["days_remaining"] < int(days_remaining):
            reasons["not_after"] = {"old": have["not_after"], "new": f"{days_valid} days from now"}
    changes = reasons or attributes

    def apply():
        if reasons:
            return __salt__["local_pki.issue_certificate"](
                name, private_key, signing_private_key, CN, signing_cert=signing_cert,
                subject_alt_names=list(dict.fromkeys(str(s).strip() for s in subject_alt_names)),
                ca=bool(ca), key_usage=want["key_usage"],
                extended_key_usage=want["extended_key_usage"], days_valid=days_valid,
                user=user, group=group, mode=mode)
        return _set_attributes(name, user, group, mode)

    def done(not_after):
        if reasons:
            return f"certificate {name} issued for {CN}, valid until {not_after}", changes
        return f"the owner or mode was set on {name}", changes

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"certificate {name} for {CN} is as it should be ({have and have.get('days_remaining')} days left)",
        planned=(f"certificate {name} would be issued for {CN} ({', '.join(sorted(reasons))})" if reasons
                 else f"the owner or mode would be set on {name}"),
        apply=apply,
        done=done,
        failure=f"{name}: ",
    )
