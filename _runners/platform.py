"""
Runner ``platform``: what the reactors ask the master to do.

``platform.provisioned`` brings a guest salt-cloud has just created to its highstate. It is what
``reactor/cloud-created.sls`` calls, for any ``salt/cloud/<name>/created`` event on the bus.

Nothing in the event decides anything: an accepted minion can put any tag and any data on the
master's bus (Salt 3008 passes a minion's batch event form, ``events`` with or without ``pretag``,
through without stamping the sender), so the name in the tag is only a hint. The runner acts only
on facts it gathers itself:

1. the name is a guest of the site with an accepted key: the target is a compound expression that
   only a minion whose master-compiled pillar says it *is* that guest can match
   (``platform:guest:name``, set by the ``platform`` ext_pillar), and that minion answers;
2. salt-cloud's provider has that instance: the runner asks through salt-cloud's own interface
   (``show_instance`` over the master's cloud config, the same call as ``salt-cloud -a
   show_instance <name>``): the Proxmox API in production, the lab's LXC host in the lab;
3. this creation has not been brought to its highstate yet: salt-cloud makes a new key pair for every
   guest it creates, so the master records the fingerprint of the accepted key it provisioned (in
   its cache dir, root only) and a second ``created`` for the same key does nothing.

A forged event therefore reaches at most what salt-cloud's own event would: the first highstate of
a guest salt-cloud really created. Operators re-apply a guest with ``salt <name> state.highstate``.

A guest the bring-up created ahead of its phase (held: ``sitectl.bringup.held``, a file in the
master's cache dir that only the bring-up runner writes) gets its base instead
(``sitectl.bringup.AHEAD_SLS``: its packages and its firewall, custom modules synced first); its
highstate comes from the bring-up in its phase. The checks above are the same for it.

Why not an orchestration: the reactor runs runners in a thread pool, and concurrent
``state.orchestrate`` calls (a ``salt-cloud -P -m`` of a whole site fires many created events at
once) race in Salt 3008's loader (``KeyError: 'salt.loaded.int.grains.core'`` while building the
MasterMinion). This runner only publishes through the LocalClient.
"""

import fcntl
import hashlib
import logging
import os
import re
import time

import salt.client
import salt.cloud
import salt.utils.minions

log = logging.getLogger(__name__)

_GUEST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _target(name):
    return f"L@{name} and I@platform:guest:name:{name}"


def _key_fingerprint(name):
    """sha256 of the minion key the master accepted for ``name``, or None."""
    try:
        with open(os.path.join(__opts__["pki_dir"], "minions", name), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None


def _records():
    folder = os.path.join(__opts__["cachedir"], "platform", "provisioned")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def _provisioned_before(name, fingerprint):
    return os.path.exists(os.path.join(_records(), f"{name}.{fingerprint}"))


def _claim(name, fingerprint):
    """Record that this creation (this accepted key) gets its first highstate; False if it already did.
    Exclusive creation, so two events for the same creation cannot both publish."""
    folder = _records()
    try:
        fd = os.open(os.path.join(folder, f"{name}.{fingerprint}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    for old in os.listdir(folder):  # the records of earlier creations of the same name
        if old.startswith(f"{name}.") and old != f"{name}.{fingerprint}":
            os.unlink(os.path.join(folder, old))
    return True


def _cloud_config():
    return __opts__.get("platform_cloud_config") or os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud")


def _at_the_provider(name):
    """salt-cloud's own answer for ``name`` (``show_instance`` at the provider that has it): None when
    an instance of that name exists there, else why not."""
    # One query at a time: a `salt-cloud -P -m` fires many created events at once, and salt-cloud's
    # loader, built concurrently in the reactor's threads, loses its __active_provider_name__.
    lock_path = os.path.join(_records(), "provider-query.lock")
    try:
        with open(lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            answer = salt.cloud.CloudClient(path=_cloud_config()).action("show_instance", names=[name])
    except Exception as exc:  # noqa: BLE001 - salt-cloud raises many kinds; each means "not confirmed"
        return f"salt-cloud could not ask its provider about {name}: {exc}"
    for drivers in (answer or {}).values():
        for nodes in (drivers.values() if isinstance(drivers, dict) else ()):
            if isinstance(nodes, dict) and isinstance(nodes.get(name), dict):
                return None
    return f"salt-cloud's provider has no instance named {name}"


def _refuse(comment):
    log.warning("platform.provisioned: %s", comment)
    return {"result": False, "comment": comment}


def provisioned(name, timeout=180, interval=3):
    """
    Wait until guest ``name`` answers (at most ``timeout`` seconds); if salt-cloud's provider has it
    and this creation has not been highstated yet, start its highstate.

    CLI Example:

    .. code-block:: bash

        salt-run platform.provisioned vault
    """
    from sitectl import bringup

    if not isinstance(name, str) or not _GUEST_NAME.match(name):
        return _refuse(f"{name!r} is not a guest name; nothing applied")
    fingerprint = _key_fingerprint(name)
    if fingerprint and _provisioned_before(name, fingerprint):
        return _refuse(f"{name} (this key) was already brought to its highstate once; nothing applied")
    target = _target(name)
    ckminions = salt.utils.minions.CkMinions(__opts__)
    with salt.client.get_local_client(mopts=__opts__) as client:
        deadline = time.monotonic() + float(timeout)
        while True:
            # The master's view first (accepted key + the pillar it compiled for that minion), then a
            # ping to that one minion: it answers once it receives publications.
            if name in ckminions.check_minions(target, "compound", greedy=False)["minions"]:
                answered = client.cmd(name, "test.ping", tgt_type="list", timeout=5, gather_job_timeout=3)
                if answered.get(name) is True:
                    break
            if time.monotonic() >= deadline:
                return _refuse(f"no minion that is the site's guest {name!r} answered within {timeout}s "
                               f"(not a guest of the site, or its key is not accepted, or it is down); "
                               f"nothing applied")
            time.sleep(float(interval))
        missing = _at_the_provider(name)
        if missing:
            return _refuse(f"{missing}; nothing applied")
        fingerprint = _key_fingerprint(name)
        if not fingerprint or not _claim(name, fingerprint):
            return _refuse(f"{name} (this key) was already brought to its highstate once; nothing applied")
        held = name in bringup.held(__opts__["cachedir"])
        if held:
            jid = client.cmd_async(target, "state.sls", [bringup.AHEAD_SLS], tgt_type="compound",
                                   kwarg={"sync_mods": "all"})
            comment = f"{name} is held for its bring-up phase: its base ({bringup.AHEAD_SLS}) started"
        else:
            jid = client.cmd_async(target, "state.highstate", tgt_type="compound")
            comment = f"highstate of {name} started"
    log.info("new guest: %s, jid %s", comment, jid)
    return {"result": True, "comment": comment, "jid": jid, "held": held}
