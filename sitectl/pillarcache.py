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
from collections import OrderedDict

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
