"""
ext_pillar ``platform``: reads the site as data, validates it on the master and adds each guest's view.

Configured in the master config (``ext_pillar: [{platform: {}}]``); it runs for every minion and
every run. The site file (``pillar/site/<platform_site>.sls``) and the role catalog
(``pillar/platform/roles.sls``) are loaded here as plain YAML (``sitectl.sitefile``), never rendered
as Jinja: a site file is the owner's data, not code the master runs as root. The pillar SLS that
Salt renders (pillar/top.sls) are the project's own overlays (the lab's), merged over the site:
catalog < site file < overlay, mappings merged, everything else replaced.

An unreadable or invalid site gives the pillar one ``_errors`` entry naming each problem (file,
line and column for YAML; the key path and what is expected otherwise): ``state.apply`` then
refuses to run anything and prints it once, and the master logs it once, without a traceback.

The minion gets ``platform:guest`` (see ``sitectl.site.guest_view``): its roles, the SLS to apply,
its firewall openings with resolved sources, and the master's address. A minion that is not a guest
of the site (the master's own minion, a test minion) gets ``platform:guest: None``.

Speed (issue 21): every minion's every run, and every Vault token the master issues (its
``refresh_pillar``), asks for this pillar; parsing and validating the whole site each time cost
~75 ms of a master worker per call. The result is kept per master worker process, keyed by the
SHA-256 of exactly what it is computed from: the text of both files as read on this call and the
overlay pillar Salt passes in (and the minion id for the guest's view). Any change to either file or to the overlay is a
different key, so the next call parses and validates again; the files are read on every call.
(The schemas and role defaults were already loaded once per process: a changed checkout needs a
master restart, as before.) Each call gets its own deep copy. The cache lives in
``sitectl.pillarcache``, an ordinary module: Salt's loader executes this file anew for every
pillar compile, so a cache here would start empty each time.
"""

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__virtualname__ = "platform"


def __virtual__():
    try:
        import sitectl.site  # noqa: F401
    except ImportError as exc:
        return False, f"the sitectl package is not importable on the master: {exc}"
    return __virtualname__


def _refused(message):
    log.error("platform: %s", message)
    return {"_errors": [message]}


def ext_pillar(minion_id, pillar, *args, **kwargs):
    from sitectl import pillarcache, sitefile

    root = Path(__opts__.get("platform_pillar_dir") or __opts__["pillar_roots"]["base"][0])
    name = __opts__.get("platform_site", "example")
    try:
        texts = (sitefile.read(root / "platform" / "roles.sls", "pillar/platform/roles.sls"),
                 sitefile.read(sitefile.site_path(root, name), f"pillar/site/{name}.sls"))
    except sitefile.SiteFileError as exc:
        return _refused(f"the site description is unreadable: {exc}")
    merged = pillarcache.validated(texts, f"pillar/site/{name}.sls", pillar)
    if "_errors" in merged:
        return _refused(merged["_errors"][0])
    out = pillarcache.with_view(texts, pillar, merged, minion_id)
    if isinstance(out.get("platform"), dict):
        # What top.sls syncs by (minions do not sync custom modules on every highstate).
        out["platform"]["extension_modules"] = pillarcache.extension_modules(
            __opts__.get("file_roots", {}).get("base", []))
    return out
