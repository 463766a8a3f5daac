"""
Runner ``acme``: what the master does when a reverse proxy renewed a certificate, or one is close
to its end. ``reactor/acme-renewed.sls`` and ``reactor/acme-expiring.sls`` call it.

Nothing is taken on trust from the event: the sender is the ``id`` the master itself verified for
the minion event, and it must be a guest with the role ``reverse_proxy`` according to the pillar
the master compiles (compound ``L@<id> and I@platform:guest:roles:reverse_proxy``, as
``_runners/platform.py`` does); the lineage must be one that proxy's site gives it (a route's name
under the domain, or the domain for dns-01's wildcard). The lineage is all the event carries.

``renewed``: on the proxy, ``nginx -t`` then reload (``nginx-safe-reload``, the same script the
deploy hook runs: the reload is repeated harmlessly when the hook already did it); when the lineage
is the mail route's, the proxy writes the certificate and key into Vault under its role's path
(``roles/reverse_proxy/certificates/<lineage>``; only the mail guest's policy may read it:
``sitectl.roles.secret_grants``) and the mail guest reads that version, installs it and reloads the
services using it (``_modules/certificate_handover.py``, ``reverse_proxy:mail_certificate``). The
master passes paths and versions only; the files travel between each minion and Vault.
"""

import logging
import re

import salt.client
import salt.utils.minions

from sitectl import roles

log = logging.getLogger(__name__)

_MINION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LINEAGE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _proxy_target(minion):
    return f"L@{minion} and I@platform:guest:roles:reverse_proxy"


def _guest_target(name):
    return f"L@{name} and I@platform:guest:name:{name}"


def _refuse(comment):
    log.warning("acme: %s", comment)
    return {"result": False, "comment": comment}


def _proxy_context(minion, lineage):
    """The sender's verified view (site, role parameters), or a refusal message."""
    if not isinstance(minion, str) or not _MINION.match(minion):
        return None, f"{minion!r} is not a minion id; nothing done"
    if not isinstance(lineage, str) or not _LINEAGE.match(lineage):
        return None, f"{lineage!r} is not a certificate lineage; nothing done"
    ckminions = salt.utils.minions.CkMinions(__opts__)
    if minion not in ckminions.check_minions(_proxy_target(minion), "compound", greedy=False)["minions"]:
        return None, f"{minion} is not a reverse proxy of the site; event ignored"
    # The facts the proxy's own states use (sitectl.roles via the platform ext_pillar), compiled now.
    platform = __salt__["pillar.show_pillar"](minion).get("platform") or {}
    edge, rp = platform.get("edge") or {}, (platform.get("params") or {}).get("reverse_proxy") or {}
    lineages = [item["name"] for item in edge.get("lineages", [])]
    if lineage not in lineages:
        return None, f"{lineage} is not a lineage of {minion} (expected one of: {', '.join(sorted(lineages))})"
    return {"rp": rp, "acme": edge["acme"], "routes": {r["name"]: r for r in edge["routes"]}}, None


def _one(returned, minion, what):
    """The return of ``minion``, or an error naming what did not answer."""
    if minion not in returned:
        raise RuntimeError(f"{minion} did not answer {what}")
    ret = returned[minion]
    if isinstance(ret, dict) and ret.get("retcode", 0) != 0:
        raise RuntimeError(f"{what} failed on {minion}: {ret.get('ret')}")
    return ret.get("ret") if isinstance(ret, dict) and "ret" in ret else ret


def renewed(minion, lineage, timeout=120):
    """
    Act on ``platform/acme/renewed`` from ``minion`` for certificate lineage ``lineage``.

    CLI Example:

    .. code-block:: bash

        salt-run acme.renewed reverse-proxy mail.example.org
    """
    ctx, refusal = _proxy_context(minion, lineage)
    if refusal:
        return _refuse(refusal)
    result = {"result": True, "minion": minion, "lineage": lineage}
    with salt.client.get_local_client(mopts=__opts__) as client:
        try:
            reload = _one(client.cmd(_proxy_target(minion), "cmd.run_all", [ctx["rp"]["nginx"]["safe_reload"]],
                                     tgt_type="compound", timeout=timeout, full_return=True,
                                     kwarg={"python_shell": False}), minion, "nginx-safe-reload")
            if reload.get("retcode") != 0:
                raise RuntimeError(f"nginx -t or the reload failed on {minion}: {reload.get('stderr', '').strip()}")
            result["nginx"] = "reloaded"
            mail = ctx["rp"].get("mail_certificate") or {}
            route = ctx["routes"].get(mail.get("route"))
            if route and lineage == route["lineage"]:
                result["mail"] = _hand_over(client, minion, route["guest"], lineage, ctx, mail, timeout)
        except RuntimeError as exc:
            log.error("acme: renewal of %s from %s: %s", lineage, minion, exc)
            result.update(result=False, comment=str(exc))
            return result
    result["comment"] = f"{lineage} renewed on {minion}: nginx reloaded" + (
        f"; certificate installed on {result['mail']['guest']}" if "mail" in result else "")
    log.info("acme: %s", result["comment"])
    return result


def _hand_over(client, proxy, guest, lineage, ctx, mail, timeout):
    """The proxy writes the lineage into Vault; ``guest`` reads that version and installs it."""
    ckminions = salt.utils.minions.CkMinions(__opts__)
    if guest not in ckminions.check_minions(_guest_target(guest), "compound", greedy=False)["minions"]:
        raise RuntimeError(f"the mail guest {guest} is not an accepted minion of the site")
    live = f"{ctx['acme']['config_dir']}/live/{lineage}"
    # Under the secrets mount; the proxy's salt_role_reverse_proxy policy covers it, and read on this
    # path is granted to the mail route's guest alone (the same function derives the grant).
    path = roles.mail_certificate_path(ctx["rp"], lineage)
    published = _one(client.cmd(_proxy_target(proxy), "certificate_handover.publish",
                                [path, {"cert": f"{live}/fullchain.pem", "key": f"{live}/privkey.pem"}],
                                tgt_type="compound", timeout=timeout, full_return=True),
                     proxy, "certificate_handover.publish")
    if not isinstance(published, dict):
        raise RuntimeError(f"certificate_handover.publish failed on {proxy}: {published}")
    installed = _one(client.cmd(_guest_target(guest), "certificate_handover.install",
                                [path, published["version"], mail["files"], mail.get("reload_cmd")],
                                tgt_type="compound", timeout=timeout, full_return=True),
                     guest, "certificate_handover.install")
    if not isinstance(installed, dict):
        raise RuntimeError(f"certificate_handover.install failed on {guest}: {installed}")
    return {"guest": guest, "published": published["changed"], **installed}


def expiring(minion, lineage, days_left):
    """
    Act on ``platform/acme/expiring``: a proxy's certificate is close to its end, so its renewals
    keep failing. Logged as an error on the master and returned for the job's record.

    CLI Example:

    .. code-block:: bash

        salt-run acme.expiring reverse-proxy mail.example.org 12
    """
    ctx, refusal = _proxy_context(minion, lineage)
    if refusal:
        return _refuse(refusal)
    try:
        days = int(days_left)
    except (TypeError, ValueError):
        return _refuse(f"days_left {days_left!r} is not a number; event ignored")
    comment = (f"certificate {lineage} on {minion} expires in {days} day(s): renewals are failing "
               f"(journalctl -u certbot on {minion})")
    log.error("acme: %s", comment)
    return {"result": True, "minion": minion, "lineage": lineage, "days_left": days, "comment": comment,
            "directory": ctx["acme"].get("directory")}
