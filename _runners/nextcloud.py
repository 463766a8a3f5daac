"""
Runner ``nextcloud``: an upgrade of Nextcloud to the pinned release, in the order the data tier
needs: first the database's backup on the postgresql guest (the postgresql role's own backup unit,
``nextcloud:upgrade:backup_unit``, run to its end), then the nextcloud role on the Nextcloud guest
with the upgrade approved for exactly the pinned version (``nextcloud:upgrade:approved``); the guest's
``nextcloud_occ.release_present`` then upgrades in maintenance mode with ``occ upgrade``. Without this
runner a highstate refuses the upgrade (and always refuses a downgrade), so no upgrade ever runs
without a fresh backup of the database.

The guests are the minions whose master-compiled pillar gives them the role (compound
``I@platform:guest:roles:<role>``); nothing is taken from an event.
"""

import logging

import salt.client
import salt.utils.minions

log = logging.getLogger(__name__)


def _with_role(role):
    ckminions = salt.utils.minions.CkMinions(__opts__)
    return sorted(ckminions.check_minions(f"I@platform:guest:roles:{role}", "compound", greedy=False)["minions"])


def _refuse(comment):
    log.warning("nextcloud.upgrade: %s", comment)
    return {"result": False, "comment": comment}


def _backup(client, database, unit, timeout):
    """Run the postgresql role's backup unit to its end on ``database``; an error message, or None."""
    returned = client.cmd(database, "cmd.run_all", [["systemctl", "start", unit]], timeout=timeout,
                          full_return=True, kwarg={"python_shell": False}).get(database)
    ran = returned.get("ret") if isinstance(returned, dict) else None
    if not isinstance(ran, dict):
        return f"the database backup ({unit}) did not run on {database}: {ran or 'no answer'}"
    if ran.get("retcode") != 0:
        return f"the database backup ({unit}) failed on {database}: {(ran.get('stderr') or '').strip()}"
    return None


def _apply(client, guest, version, timeout):
    """Apply the nextcloud role on ``guest`` with the upgrade to ``version`` approved; an error
    message, or None."""
    returned = client.cmd(guest, "state.apply", ["nextcloud"], timeout=timeout, full_return=True,
                          kwarg={"pillar": {"nextcloud": {"upgrade": {"approved": version}}}}).get(guest)
    states = returned.get("ret") if isinstance(returned, dict) else None
    if not isinstance(states, dict):
        return f"the nextcloud role did not run on {guest}: {states or 'no answer'}"
    failed = {r.get("__id__", sid): r.get("comment") for sid, r in states.items()
              if isinstance(r, dict) and r.get("result") is False}
    return f"the upgrade of {guest} to {version} failed after the backup: {failed}" if failed else None


def upgrade(minion=None, timeout=3600):
    """
    Back the database up, then let ``minion`` (or each Nextcloud guest of the site) upgrade to its
    pinned release.

    CLI Example:

    .. code-block:: bash

        salt-run nextcloud.upgrade
    """
    guests = [minion] if minion else _with_role("nextcloud")
    if not guests or (minion and minion not in _with_role("nextcloud")):
        return _refuse(f"{minion or 'no minion'} is not a Nextcloud guest of the site; nothing done")
    databases = _with_role("postgresql")
    if len(databases) != 1:
        return _refuse(f"expected one postgresql guest, found {databases or 'none'}; nothing done")
    results = {}
    with salt.client.get_local_client(mopts=__opts__) as client:
        for guest in guests:
            pillar = __salt__["pillar.show_pillar"](guest)
            params = ((pillar.get("platform") or {}).get("params") or {}).get("nextcloud") or {}
            version = str((params.get("release") or {}).get("version", ""))
            unit = (params.get("upgrade") or {}).get("backup_unit", "postgresql-backup.service")
            refusal = _backup(client, databases[0], unit, timeout)
            if refusal:
                return _refuse(f"{refusal}; the upgrade of {guest} did not run")
            refusal = _apply(client, guest, version, timeout)
            if refusal:
                return _refuse(refusal)
            backup = {"guest": databases[0], "unit": unit}
            results[guest] = {"version": version, "backup": backup}
    return {"result": True, "upgraded": results}
