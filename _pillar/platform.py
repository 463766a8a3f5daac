"""
ext_pillar ``platform``: validates the whole site on the master and adds each guest's own view.

Configured in the master config (``ext_pillar: [{platform: {}}]``). It runs after the pillar SLS
files are rendered, on the merged result, for every minion and every run. An invalid site raises,
which Salt turns into a pillar error: ``state.apply`` then refuses to run anything, and the message
names each bad key and what is expected.

The minion gets ``platform:guest`` (see ``sitectl.site.guest_view``): its roles, the SLS to apply,
its firewall openings with resolved sources, and the master's address. A minion that is not a guest
of the site (the master's own minion, a test minion) gets ``platform:guest: None``.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "platform"


def __virtual__():
    try:
        import sitectl.site  # noqa: F401
    except ImportError as exc:
        return False, f"the sitectl package is not importable on the master: {exc}"
    return __virtualname__


def ext_pillar(minion_id, pillar, *args, **kwargs):
    from sitectl import site

    site.check(pillar)
    return site.platform_pillar(pillar, minion_id)
