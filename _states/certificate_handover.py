"""
The receiving side of a certificate handed over through Vault (``_modules/certificate_handover.py``),
as a state: the files hold the current version the sender published, and the services that use
them are reloaded when a file changed.

The master's renewal runner (``_runners/acme.py``) pushes each new certificate to the mail guest
as soon as the proxy has it; this state is the same install pulled by the guest's own highstate,
so a guest that was not up (or not yet a minion) when the certificate was first issued catches up
on its next run. Nothing published yet is not a failure: the proxy publishes the certificate when
it is issued.

.. code-block:: yaml

    mailcow-certificate-installed:
      certificate_handover.installed:
        - name: roles/reverse_proxy/certificates/mail.example.org
        - destinations:
            cert: {path: /opt/mailcow-dockerized/data/assets/ssl/cert.pem, mode: '0644'}
            key: {path: /opt/mailcow-dockerized/data/assets/ssl/key.pem, mode: '0600'}
        - reload_cmd: [docker, compose, --project-directory, /opt/mailcow-dockerized, restart, nginx-mailcow]
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "certificate_handover"


def __virtual__():
    if "certificate_handover.pending" not in __salt__:
        return False, "the certificate_handover execution module is not available (saltext-vault)"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def installed(name, destinations, reload_cmd=None, mount="secret"):
    """The files of ``destinations`` (field -> {path, mode}) hold the current version of the KV v2
    secret ``name``; ``reload_cmd`` (a list, no shell) runs when one changed."""
    ret = __utils__["platform_state.new"](name)
    try:
        pending = __salt__["certificate_handover.pending"](name, destinations, mount=mount)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"certificate {name}: {exc}")
    if pending is None:
        ret["comment"] = (f"nothing published at {mount}/{name} yet: the proxy publishes the certificate when it "
                          f"is issued, and the master hands it over then")
        return ret
    version = pending["version"]
    changes = {path: {"old": None, "new": f"version {version} of {mount}/{name}"} for path in pending["differ"]}
    if changes and reload_cmd:
        changes["reload"] = {"old": None, "new": " ".join(reload_cmd)}

    def done(result):
        comment = f"installed version {result['version']} of {mount}/{name}"
        if result["reloaded"]:
            comment += f"; {reload_cmd[0]} ran"
        return comment, changes

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"the files hold version {version} of {mount}/{name}",
        planned=f"version {version} of {mount}/{name} would be installed",
        apply=lambda: __salt__["certificate_handover.install"](name, version, destinations, reload_cmd=reload_cmd,
                                                               mount=mount),
        done=done, failure=f"certificate {name}: ")
