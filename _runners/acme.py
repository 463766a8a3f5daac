"""
Runner ``acme``: what the master does when a reverse proxy renewed a certificate, or one is close
to its end. ``reactor/acme-renewed.sls`` and ``reactor/acme-expiring.sls`` call it.

Nothing in the event decides anything, not even who sent it: an accepted minion can put any tag
and any data on the master's bus (Salt 3008 passes a minion's batch event form, ``events`` with or
without ``pretag``, through without stamping the sender). The lineage the event names is a hint,
checked against the site; everything else the runner finds out itself:

- the reverse proxies are the minions whose master-compiled pillar gives them the role
  (compound ``L@<id> and I@platform:guest:roles:reverse_proxy``, as ``_runners/platform.py``
  does), and the lineage must be one of theirs (a route's name under the domain, or the domain for
  dns-01's wildcard);
- ``renewed`` acts only when it reads, on the proxy, a certificate newer than the one it last acted
  on for that lineage (fingerprint, serial and start date kept in the master's cache dir, root
  only): a forged event finds nothing new and does nothing; a real renewal is acted on once;
- ``expiring`` reads the certificate's end date on the proxy and reports only a certificate that
  really is within ``renewal.expiry_warn_days`` of its end; the event's ``days_left`` is ignored.
  What it verified becomes the alert ``CertificateRenewalFailing`` in the site's Alertmanager(s)
  (``platform:monitoring:alertmanagers``), which mails it like every other alert; one that cannot be
  posted makes the runner's return false, naming the Alertmanager and why.

``renewed``: on the proxy, ``nginx -t`` then reload (``nginx-safe-reload``, the same script the
deploy hook runs: the reload is repeated harmlessly when the hook already did it); when the lineage
is the mail route's, the proxy writes the certificate and key into Vault under its role's path
(``roles/reverse_proxy/certificates/<lineage>``; only the mail guest's policy may read it:
``sitectl.roles.secret_grants``) and the mail guest reads that version, installs it and reloads the
services using it (``_modules/certificate_handover.py``, ``reverse_proxy:mail_certificate``). The
master passes paths and versions only; the files travel between each minion and Vault.

A lineage's first issuance counts as a renewal: certbot runs no deploy hook then, so the proxy's
certificate state runs the same hook once it has issued (``salt/reverse_proxy/certificates.sls``),
and the mail guest gets its certificate from the first day. The guest may still be starting then
(created with the proxy): the runner waits for it, bounded, and syncs its modules first; a guest
that missed it installs the published version on its own highstate (``mailcow.certificate``).
"""

import datetime
import json
import logging
import os
import re
import time

import requests
import salt.client
import salt.utils.minions
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sitectl import roles

log = logging.getLogger(__name__)

_MINION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LINEAGE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
ALERT_NAME = "CertificateRenewalFailing"
# The proxy's expiry check runs daily: an alert that lives a day and two hours stays firing while the
# check keeps finding the certificate near its end, and resolves by itself a day after renewals work.
ALERT_LIFETIME = datetime.timedelta(hours=26)
# Within this many days of its end the alert is critical (mailed hourly), before that a warning.
CRITICAL_DAYS = 7


def _proxy_target(minion):
    return f"L@{minion} and I@platform:guest:roles:reverse_proxy"


def _guest_target(name):
    return f"L@{name} and I@platform:guest:name:{name}"


def _refuse(comment):
    log.warning("acme: %s", comment)
    return {"result": False, "comment": comment}


def _proxy_context(minion, lineage):
    """The verified view (site, role parameters) of reverse proxy ``minion``, or a refusal message."""
    if not isinstance(minion, str) or not _MINION.match(minion):
        return None, f"{minion!r} is not a minion id; nothing done"
    if not isinstance(lineage, str) or not _LINEAGE.match(lineage):
        return None, f"{lineage!r} is not a certificate lineage; nothing done"
    ckminions = salt.utils.minions.CkMinions(__opts__)
    if minion not in ckminions.check_minions(_proxy_target(minion), "compound", greedy=False)["minions"]:
        return None, f"{minion} is not a reverse proxy of the site; event ignored"
    # The facts the proxy's own states use (sitectl.roles via the platform ext_pillar), compiled now.
    pillar = __salt__["pillar.show_pillar"](minion)
    platform = pillar.get("platform") or {}
    edge, rp = platform.get("edge") or {}, (platform.get("params") or {}).get("reverse_proxy") or {}
    lineages = [item["name"] for item in edge.get("lineages", [])]
    if lineage not in lineages:
        return None, f"{lineage} is not a lineage of {minion} (expected one of: {', '.join(sorted(lineages))})"
    return {"minion": minion, "rp": rp, "acme": edge["acme"], "routes": {r["name"]: r for r in edge["routes"]},
            "site": (pillar.get("site") or {}).get("name"),
            "alertmanagers": (platform.get("monitoring") or {}).get("alertmanagers") or []}, None


def _proxies_with(lineage, minion=None):
    """The contexts of the proxies to look at: ``minion`` when a caller names one (``salt-run`` by
    hand), else every reverse proxy of the site that has ``lineage``; or a refusal message."""
    if minion is not None:
        ctx, refusal = _proxy_context(minion, lineage)
        return ([ctx], None) if ctx else (None, refusal)
    if not isinstance(lineage, str) or not _LINEAGE.match(lineage):
        return None, f"{lineage!r} is not a certificate lineage; nothing done"
    ckminions = salt.utils.minions.CkMinions(__opts__)
    proxies = ckminions.check_minions("I@platform:guest:roles:reverse_proxy", "compound", greedy=False)["minions"]
    contexts, refusals = [], []
    for proxy in sorted(proxies):
        ctx, refusal = _proxy_context(proxy, lineage)
        if ctx:
            contexts.append(ctx)
        else:
            refusals.append(refusal)
    if not contexts:
        return None, f"no reverse proxy of the site has the lineage {lineage}: {'; '.join(refusals) or 'none found'}"
    return contexts, None


def _certificate_on(client, ctx, lineage, timeout):
    """The lineage's certificate as the proxy has it now: fingerprint, serial, start and end."""
    minion = ctx["minion"]
    path = f"{ctx['acme']['config_dir']}/live/{lineage}/fullchain.pem"  # its first certificate: the lineage's
    try:
        pem = _one(client.cmd(_proxy_target(minion), "file.read", [path], tgt_type="compound", timeout=timeout,
                              full_return=True), minion, f"reading {path}")
    except RuntimeError:
        raise RuntimeError(f"{minion} has no readable certificate at {path} (or did not answer)") from None
    try:
        cert = x509.load_pem_x509_certificate(str(pem).encode())
    except ValueError as exc:
        raise RuntimeError(f"{path} on {minion} is not a PEM certificate: {exc}") from exc
    return {"fingerprint": cert.fingerprint(hashes.SHA256()).hex(), "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat()}


def _record_path(minion, lineage):
    folder = os.path.join(__opts__["cachedir"], "platform", "acme", minion)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"{lineage}.json")


def _last_acted_on(minion, lineage):
    try:
        with open(_record_path(minion, lineage), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return None


def _remember(minion, lineage, certificate):
    path = _record_path(minion, lineage)
    fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(certificate, fh)
    os.replace(f"{path}.new", path)


def _is_newer(certificate, last):
    return last is None or (certificate["fingerprint"] != last["fingerprint"]
                            and certificate["not_before"] >= last["not_before"])


def _renewed_proxy(client, contexts, lineage, timeout):
    """The first proxy on which the lineage's certificate is newer than the one last acted on, with that
    certificate; or a refusal message."""
    seen = []
    for ctx in contexts:
        certificate = _certificate_on(client, ctx, lineage, timeout)
        if _is_newer(certificate, _last_acted_on(ctx["minion"], lineage)):
            return ctx, certificate, None
        seen.append(f"{ctx['minion']} (serial {certificate['serial']})")
    return None, None, (f"no certificate of {lineage} newer than the one last acted on, on "
                        f"{', '.join(seen)}; nothing done")


def _one(returned, minion, what):
    """The return of ``minion``, or an error naming what did not answer."""
    if minion not in returned:
        raise RuntimeError(f"{minion} did not answer {what}")
    ret = returned[minion]
    if isinstance(ret, dict) and ret.get("retcode", 0) != 0:
        raise RuntimeError(f"{what} failed on {minion}: {ret.get('ret')}")
    return ret.get("ret") if isinstance(ret, dict) and "ret" in ret else ret


def renewed(minion=None, lineage=None, timeout=120):
    """
    Act on ``platform/acme/renewed`` for certificate lineage ``lineage``: only on a reverse proxy
    (``minion``, or each of the site's) where that lineage's certificate is newer than the one last
    acted on. The reactor names no minion: who sent the event is not known.

    CLI Example:

    .. code-block:: bash

        salt-run acme.renewed lineage=mail.example.org
    """
    contexts, refusal = _proxies_with(lineage, minion)
    if refusal:
        return _refuse(refusal)
    with salt.client.get_local_client(mopts=__opts__) as client:
        try:
            ctx, certificate, refusal = _renewed_proxy(client, contexts, lineage, timeout)
        except RuntimeError as exc:
            return _refuse(f"renewal of {lineage}: {exc}; nothing done")
        if refusal:
            return _refuse(refusal)
        minion = ctx["minion"]
        result = {"result": True, "minion": minion, "lineage": lineage, "serial": certificate["serial"]}
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
    _remember(minion, lineage, certificate)
    result["comment"] = f"{lineage} renewed on {minion}: nginx reloaded" + (
        f"; certificate installed on {result['mail']['guest']}" if "mail" in result else "")
    log.info("acme: %s", result["comment"])
    return result


def _ready(client, guest, timeout, interval=3):
    """Wait, bounded, for ``guest`` to answer, then give it this tree's modules: on a certificate's
    first issuance the mail guest may have been created with the proxy and still be booting or
    starting its first highstate (which is what syncs them)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        answered = client.cmd(_guest_target(guest), "test.ping", tgt_type="compound", timeout=5)
        if answered.get(guest) is True:
            break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the mail guest {guest} did not answer within {timeout} s")
        time.sleep(interval)
    _one(client.cmd(_guest_target(guest), "saltutil.sync_all", tgt_type="compound", timeout=timeout,
                    full_return=True), guest, "saltutil.sync_all")


def _hand_over(client, proxy, guest, lineage, ctx, mail, timeout):
    """The proxy writes the lineage into Vault; ``guest`` reads that version and installs it."""
    ckminions = salt.utils.minions.CkMinions(__opts__)
    if guest not in ckminions.check_minions(_guest_target(guest), "compound", greedy=False)["minions"]:
        raise RuntimeError(f"the mail guest {guest} is not an accepted minion of the site")
    _ready(client, guest, timeout)
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


def expiring(minion=None, lineage=None, days_left=None, timeout=60):
    """
    Act on ``platform/acme/expiring``: a proxy's certificate is close to its end, so its renewals
    keep failing. The runner reads the certificate's end itself on ``minion`` (or each of the site's
    reverse proxies that has the lineage); ``days_left`` from the event is ignored. One within
    ``renewal.expiry_warn_days`` of its end is logged as an error on the master, posted to the site's
    Alertmanager(s) as ``CertificateRenewalFailing`` (critical within ``CRITICAL_DAYS`` of its end,
    else warning; it ends a day and two hours later unless the next daily check posts it again) and
    returned for the job's record; ``result`` is false when an Alertmanager did not take it.

    CLI Example:

    .. code-block:: bash

        salt-run acme.expiring lineage=mail.example.org
    """
    contexts, refusal = _proxies_with(lineage, minion)
    if refusal:
        return _refuse(refusal)
    now = datetime.datetime.now(datetime.timezone.utc)
    found = []
    with salt.client.get_local_client(mopts=__opts__) as client:
        for ctx in contexts:
            try:
                certificate = _certificate_on(client, ctx, lineage, timeout)
            except RuntimeError as exc:
                return _refuse(f"expiry of {lineage}: {exc}; nothing done")
            days = (datetime.datetime.fromisoformat(certificate["not_after"]) - now).days
            warn_days = int((ctx["rp"].get("renewal") or {}).get("expiry_warn_days", 21))
            if days <= warn_days:
                found.append((ctx, days))
    if not found:
        return _refuse(f"no certificate of {lineage} on a proxy is within its warning days of its end; "
                       f"nothing done")
    ctx, days = found[0]
    minion = ctx["minion"]
    comment = (f"certificate {lineage} on {minion} expires in {days} day(s): renewals are failing "
               f"(journalctl -u certbot on {minion})")
    log.error("acme: %s", comment)
    delivered = _raise_alert(ctx, lineage, days, comment, now)
    failed = {url: outcome for url, outcome in delivered.items() if outcome != "posted"}
    if not delivered:
        comment += "; no Alertmanager to post the alert to (the site has no monitoring guest)"
    elif failed:
        comment += "; the alert did not reach " + "; ".join(f"{url} ({why})" for url, why in sorted(failed.items()))
        log.error("acme: %s", comment)
    else:
        comment += f"; alert {ALERT_NAME} posted to {', '.join(sorted(delivered))}"
    return {"result": not failed, "minion": minion, "lineage": lineage, "days_left": days, "comment": comment,
            "directory": ctx["acme"].get("directory"), "alertmanagers": delivered}


def _raise_alert(ctx, lineage, days, comment, now, timeout=10):
    """``CertificateRenewalFailing`` for what the runner verified, posted to each of the site's
    Alertmanagers (API v2, ``POST /api/v2/alerts``): url -> ``posted`` or why it was not."""
    labels = {"alertname": ALERT_NAME, "severity": "critical" if days <= CRITICAL_DAYS else "warning",
              "guest": ctx["minion"], "role": "reverse_proxy", "lineage": lineage, "fqdn": lineage}
    if ctx.get("site"):
        labels["site"] = ctx["site"]  # as Prometheus's own alerts carry it (external_labels)
    alert = {"labels": labels,
             "annotations": {"summary": f"the certificate {lineage} on {ctx['minion']} is not being renewed",
                             "description": comment},
             "startsAt": now.isoformat(), "endsAt": (now + ALERT_LIFETIME).isoformat()}
    out = {}
    for url in ctx["alertmanagers"]:
        try:
            reply = requests.post(f"{url.rstrip('/')}/api/v2/alerts", json=[alert], timeout=timeout)
        except requests.exceptions.RequestException as exc:
            out[url] = f"unreachable: {type(exc).__name__}"
            continue
        out[url] = "posted" if reply.ok else f"HTTP {reply.status_code}: {reply.text.strip()[:200]}"
    return out
