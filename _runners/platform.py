"""
Runner ``platform``: what the reactors ask the master to do.

``platform.provisioned`` brings a guest salt-cloud has just created to its highstate. It is what
``reactor/cloud-created.sls`` calls. It waits (bounded) until the new minion answers, then
publishes ``state.highstate`` without blocking the reactor. The target is a compound expression
that only a minion whose master-compiled pillar says it *is* that guest of the site can match
(``platform:guest:name``, set by the ``platform`` ext_pillar), so a name that is not a guest of
the site reaches nobody.

Why not an orchestration: the reactor runs runners in a thread pool, and concurrent
``state.orchestrate`` calls (a ``salt-cloud -P -m`` of a whole site fires many created events at
once) race in Salt 3008's loader (``KeyError: 'salt.loaded.int.grains.core'`` while building the
MasterMinion). This runner only publishes through the LocalClient.
"""

import logging
import re
import time

import salt.client
import salt.utils.minions

log = logging.getLogger(__name__)

_GUEST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _target(name):
    return f"L@{name} and I@platform:guest:name:{name}"


def provisioned(name, timeout=180, interval=3):
    """
    Wait until guest ``name`` answers (at most ``timeout`` seconds), then start its highstate.

    CLI Example:

    .. code-block:: bash

        salt-run platform.provisioned vault
    """
    if not isinstance(name, str) or not _GUEST_NAME.match(name):
        return {"result": False, "comment": f"{name!r} is not a guest name; nothing applied"}
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
                comment = (f"no minion that is the site's guest {name!r} answered within {timeout}s "
                           f"(not a guest of the site, or its key is not accepted, or it is down); nothing applied")
                log.warning(comment)
                return {"result": False, "comment": comment}
            time.sleep(float(interval))
        jid = client.cmd_async(target, "state.highstate", tgt_type="compound")
    log.info("highstate of new guest %s started, jid %s", name, jid)
    return {"result": True, "comment": f"highstate of {name} started", "jid": jid}
