"""The platform ext_pillar's results kept per master process (issue 21), keyed by their inputs.

Every minion's every run, and every Vault token the master issues (saltext-vault's
``refresh_pillar``), compiles the pillar: parsing and validating the whole site each time cost
~75 ms of a master worker. Here the validated site is kept under the SHA-256 of exactly what it is
computed from: the text of the catalog and the site file as read on this call (the caller reads
them every time) and the overlay pillar Salt passes in; a guest's view under that digest and its
minion id. A changed byte in either file, or a changed overlay, is a new key: that call parses and
validates again. A refused site is kept as the refusal of those same bytes. Each call gets its own
deep copy, never the kept objects (Salt merges into what it is given).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

# The last inputs only: a site edited while the master runs leaves its old entries to age out.
SIZE = 256
_kept: OrderedDict = OrderedDict()


def digest(texts: tuple[str, ...], overlay) -> str | None:
    """SHA-256 of the files' text and the overlay pillar, or None when the overlay has no canonical
    JSON form (then nothing is kept)."""
    try:
        overlay_text = json.dumps(overlay, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    out = hashlib.sha256()
    for part in (*texts, overlay_text):
        data = part.encode("utf-8", "surrogatepass")
        out.update(len(data).to_bytes(8, "big"))
        out.update(data)
    return out.hexdigest()


def _kept_or(key, compute):
    if key is None:
        return compute()
    if key in _kept:
        _kept.move_to_end(key)
        return _kept[key]
    value = _kept[key] = compute()
    while len(_kept) > SIZE:
        _kept.popitem(last=False)
    return value


def _validate(texts, site_shown, overlay) -> dict:
    from sitectl import roles, site, sitefile

    try:
        catalog = sitefile.loads(texts[0], "pillar/platform/roles.sls")
        described = sitefile.loads(texts[1], site_shown)
    except sitefile.SiteFileError as exc:
        return {"_errors": [f"the site description is unreadable: {exc}"]}
    merged = roles.merge(roles.merge(catalog, described), overlay)
    errors = site.validate(merged)
    if errors:
        return {"_errors": [str(site.SiteError(errors))]}
    return merged


def validated(texts: tuple[str, str], site_shown: str, overlay) -> dict:
    """The merged site (catalog < site file < overlay), validated; or ``{"_errors": [message]}``.
    The result is shared: read it, never change it (``with_view`` gives a copy)."""
    key = digest(texts, overlay)
    return _kept_or(key and ("site", key, site_shown), lambda: _validate(texts, site_shown, overlay))


def with_view(texts: tuple[str, str], overlay, merged: dict, minion_id: str) -> dict:
    """A copy of ``merged`` (from ``validated`` of the same inputs) with minion ``minion_id``'s view."""
    from sitectl import site

    key = digest(texts, overlay)
    view = _kept_or(key and ("guest", key, minion_id), lambda: site.platform_pillar(merged, minion_id))
    return copy.deepcopy({**merged, **view})


def clear() -> None:
    _kept.clear()


# What `saltutil.sync_all` takes from a file root: the files of its `_<kind>` folders (salt.utils.extmods).
_SYNCED = (".py", ".pyx", ".so", ".zip")
_fingerprints: dict = {}


def extension_modules(file_roots: list[str]) -> str:
    """SHA-256 of the extension modules the minions sync from these file roots (every file of a
    top-level ``_<kind>`` folder that Salt's sync takes, by path and content). top.sls compares it
    with the one its minion last synced and syncs only when they differ (minions do not sync on
    every highstate: ``autoload_dynamic_modules`` is off, sitectl.site.MINION_SETTINGS). The files
    are listed and stat'ed on every call; their content is read again only when a size or a
    modification time changed."""
    found = []
    for root in file_roots:
        base = Path(root)
        if not base.is_dir():
            continue
        for kind in sorted(p for p in base.iterdir() if p.name.startswith("_") and p.is_dir()):
            for dirpath, dirnames, filenames in os.walk(kind, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for fn in sorted(filenames):
                    if fn.endswith(_SYNCED):
                        path = Path(dirpath) / fn
                        st = path.stat()
                        found.append((str(path.relative_to(base)), str(path), st.st_size, st.st_mtime_ns))
    key = tuple(found)
    if key not in _fingerprints:
        out = hashlib.sha256()
        for rel, path, _size, _mtime in found:
            data = Path(path).read_bytes()
            for part in (rel.encode(), data):
                out.update(len(part).to_bytes(8, "big"))
                out.update(part)
        _fingerprints.clear()
        _fingerprints[key] = out.hexdigest()
    return _fingerprints[key]
