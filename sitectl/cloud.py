"""What the project's salt-cloud drivers share (`_clouds/proxmox_platform.py`, `_clouds/lxclab.py`)."""

from __future__ import annotations

import copy

import salt.pillar
from salt.exceptions import SaltCloudSystemExit


def configured_provider(opts: dict, active, virtualname: str, required: tuple = ()):
    """salt-cloud's check that the provider (the active one, else ``virtualname``) is configured
    with the ``required`` keys. ``active`` is the driver's ``__active_provider_name__`` (a value or
    a context var, depending on how the loader injected it)."""
    from salt.config import is_provider_configured

    name = getattr(active, "value", lambda: active)()
    return is_provider_configured(opts, name or virtualname, required)


def site_guest(opts: dict, name: str) -> tuple[dict, dict]:
    """(guest view, site) of ``name`` from the master's own pillar for that minion id, validated.

    The driver never takes a guest's size or address from the profile: the site says it, and an
    invalid site or a name that is not a guest stops the run before anything is created.
    """
    opts = copy.deepcopy(opts)
    opts["id"] = name
    compiled = salt.pillar.get_pillar(opts, {}, name, saltenv="base").compile_pillar()
    errors = compiled.get("_errors")
    if errors:
        raise SaltCloudSystemExit("the site is invalid, nothing was created:\n" + "\n".join(errors))
    guest = (compiled.get("platform") or {}).get("guest")
    if not guest:
        raise SaltCloudSystemExit(
            f"{name!r} is not a guest of the site: add it to pillar/site/<site>.sls (guests) first"
        )
    return guest, compiled["site"]


def fire(utils, opts: dict, name: str, what: str, tag_suffix: str, vm_: dict) -> None:
    """Fire ``salt/cloud/<name>/<tag_suffix>`` on the master's bus, as salt-cloud's drivers do."""
    utils["cloud.fire_event"](
        "event",
        what,
        f"salt/cloud/{name}/{tag_suffix}",
        args=utils["cloud.filter_event"](tag_suffix, vm_, ["name", "profile", "provider", "driver"]),
        sock_dir=opts["sock_dir"],
        transport=opts["transport"],
    )


def site_of(opts: dict) -> dict:
    """The site from the master's own pillar (compiled for an id that is no guest), validated."""
    opts = copy.deepcopy(opts)
    opts["id"] = "salt-cloud"
    compiled = salt.pillar.get_pillar(opts, {}, opts["id"], saltenv="base").compile_pillar()
    errors = compiled.get("_errors")
    if errors:
        raise SaltCloudSystemExit("the site is invalid, nothing was changed:\n" + "\n".join(errors))
    return compiled["site"]


def vzdump_job(site: dict, vmids: list[int]) -> dict:
    """The parameters of PVE's /cluster/backup job that backs up ``vmids`` as ``site.backup.vzdump``
    says (None when the site declares no vzdump)."""
    spec = (site.get("backup") or {}).get("vzdump")
    if not spec:
        return None
    prune = ",".join(f"{key.replace('_', '-')}={spec[key]}" for key in ("keep_last", "keep_daily", "keep_weekly")
                     if key in spec)
    job = {"schedule": spec["schedule"], "storage": spec["storage"], "mode": spec.get("mode", "snapshot"),
           "compress": spec.get("compress", "zstd"), "enabled": 1, "vmid": ",".join(str(v) for v in sorted(vmids)),
           "comment": f"salt-platform: site={site['name']} (site.backup.vzdump, salt-cloud -f backup_schedule)"}
    if prune:
        job["prune-backups"] = prune
    return job
