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
is the mail route's, the certificate and key are sealed on the proxy for the mail guest's minion key
(``_modules/platform_tls.py``), handed over through the master as ciphertext, installed there and
the services using them reloaded (``reverse_proxy:mail_certificate``).
"""

import logging
import os
import re

import salt.client
import salt.utils.minions

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
    """Seal the lineage on the proxy for ``guest``'s minion key; install it there."""
    ckminions = salt.utils.minions.CkMinions(__opts__)
    if guest not in ckminions.check_minions(_guest_target(guest), "compound", greedy=False)["minions"]:
        raise RuntimeError(f"the mail guest {guest} is not an accepted minion of the site")
    with open(os.path.join(__opts__["pki_dir"], "minions", guest), encoding="ascii") as fh:
        public_key = fh.read()
    live = f"{ctx['acme']['config_dir']}/live/{lineage}"
    sealed = _one(client.cmd(_proxy_target(proxy), "platform_tls.seal",
                             [{"cert": f"{live}/fullchain.pem", "key": f"{live}/privkey.pem"}, public_key],
                             tgt_type="compound", timeout=timeout, full_return=True), proxy, "platform_tls.seal")
    installed = _one(client.cmd(_guest_target(guest), "platform_tls.install_sealed",
                                [sealed, mail["files"], mail.get("reload_cmd")],
                                tgt_type="compound", timeout=timeout, full_return=True),
                     guest, "platform_tls.install_sealed")
    if not isinstance(installed, dict):
        raise RuntimeError(f"platform_tls.install_sealed failed on {guest}: {installed}")
    return {"guest": guest, **installed}


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
