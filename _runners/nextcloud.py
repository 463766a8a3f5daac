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


def _answer(returned, minion, what):
    ret = (returned or {}).get(minion)
    if not isinstance(ret, dict) or ret.get("retcode", 1) != 0:
        raise RuntimeError(f"{what} failed on {minion}: {ret.get('ret') if isinstance(ret, dict) else 'no answer'}")
    return ret.get("ret")


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
            try:
                _answer(client.cmd(databases[0], "cmd.run_all", [["systemctl", "start", unit]], timeout=timeout,
                                   full_return=True, kwarg={"python_shell": False}), databases[0],
                        f"the database backup ({unit})")
                backup = {"guest": databases[0], "unit": unit}
                applied = _answer(client.cmd(guest, "state.apply", ["nextcloud"], timeout=timeout, full_return=True,
                                             kwarg={"pillar": {"nextcloud": {"upgrade": {"approved": version}}}}),
                                  guest, f"the upgrade to {version}")
            except RuntimeError as exc:
                return _refuse(f"{exc}; the upgrade of {guest} did not run" if "backup" in str(exc) else str(exc))
            failed = {sid: r.get("comment") for sid, r in (applied or {}).items()
                      if isinstance(r, dict) and r.get("result") is False}
            if failed:
                return _refuse(f"the upgrade of {guest} to {version} failed after the backup: {failed}")
            results[guest] = {"version": version, "backup": backup}
    return {"result": True, "upgraded": results}
