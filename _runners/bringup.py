"""
Runner ``bringup``: a site from no guests to converged, in dependency order, the same in the lab and
in production (docs/control.md, "Bring-up").

``bringup.plan`` shows the phases; ``bringup.up`` walks them. The order is derived from the site
(``sitectl.bringup.phases``: Vault first, then what each guest ``uses`` and its roles ``need``, the
proxy after its routes' guests, monitoring last); guests of one phase converge in parallel.

In each phase:

- a guest that salt-cloud's provider does not have is created with ``salt-cloud -m`` (the map of
  that phase's new guests); its first highstate comes from the provision flow (the
  ``salt/cloud/<name>/created`` reactor, ``_runners/platform.py``) and this runner waits for that
  highstate's return on the master's event bus;
- a guest that exists must answer a ping, then gets ``state.highstate test=True``: only when that
  shows a pending change or a failure is it highstated. A converged guest is neither re-created nor
  changed, so running the bring-up again at any point finishes what is missing, and a guest added to
  the site is created and converged alone;
- the ``salt-cloud -m`` of the phase after Vault's also creates the missing guests of every later
  phase (``ahead``, on by default): while that phase converges, they are created and get their base
  (packages and firewall, ``sitectl.bringup.AHEAD_SLS``) from the provision flow, held for their phase
  (``sitectl.bringup.hold``); in its phase such a guest gets its highstate at once (no ``test=True``
  first: it has never had one), queued behind its base run if that still runs
  (``sitectl.bringup.created_ahead`` says why not during Vault's own phase).

It stops at the first phase with a failure (a guest salt-cloud did not create, a minion that does
not answer, a failed state), naming the guest and each failed state. After the Vault guest's phase
it asks Vault itself (``vault_server.status`` on the guest, no token): not initialised, sealed, or the
master without its AppRole credentials stop it with the operators' exact steps (docs/vault.md); in
the lab, ``sitectl lab up`` plays those operators and runs the bring-up again.

Why a runner and not an orchestrate SLS: the decisions between the steps (which guests exist, what a
``test=True`` run shows, Vault's seal status, the phases computed from the site) are Python over
data the runner gathers itself; an orchestrate SLS would render them all up front, before any guest
exists. Each step still goes through Salt's own interfaces (salt-cloud, the LocalClient, the event
bus), and the runner only publishes to minions of the site.
"""

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import salt.client
import salt.cloud
import salt.pillar
import salt.utils.event

log = logging.getLogger(__name__)


def _say(line):
    """Progress, flushed at once, on stderr: salt-run's stdout stays the return alone (`--out json`)."""
    log.info("bringup: %s", line)
    print(line, file=sys.stderr, flush=True)


def _now():
    return time.strftime("%H:%M:%S")


def _site_pillar():
    """The site as the master's ext_pillar validates it (catalog, site file, overlay)."""
    minion_id = __opts__["id"]
    return salt.pillar.Pillar(__opts__, {"fqdn": minion_id}, minion_id, "base").compile_pillar()


def _cloud_config():
    return __opts__.get("platform_cloud_config") or os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud")


def _provider_lock():
    folder = os.path.join(__opts__["cachedir"], "platform", "provisioned")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, "provider-query.lock")


def _existing():
    """The names salt-cloud's providers have (the same lock as _runners/platform.py's queries)."""
    with open(_provider_lock(), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        answer = salt.cloud.CloudClient(path=_cloud_config()).query("list_nodes")
    names = set()
    for drivers in (answer or {}).values():
        for nodes in (drivers.values() if isinstance(drivers, dict) else ()):
            if isinstance(nodes, dict):
                names |= {name for name, node in nodes.items() if isinstance(node, dict)}
    return names


def _salt_cloud():
    return shutil.which("salt-cloud", path=os.path.dirname(sys.executable)) or shutil.which("salt-cloud") \
        or "salt-cloud"


def _create(names, pillar, timeout, held=frozenset()):
    """salt-cloud -m for ``names``; the first highstate of each (the created-event reactor's), from the bus,
    but of the ``held`` ones (created ahead of their phase: no highstate now). Returns (summaries, the
    failure or None)."""
    from sitectl import bringup, site

    wanted = {profile: [n for n in guests if n in names] for profile, guests in site.cloud_map(pillar).items()}
    mapfile = os.path.join(__opts__["cachedir"], "platform", "bringup.map")
    os.makedirs(os.path.dirname(mapfile), mode=0o700, exist_ok=True)
    with open(mapfile, "w", encoding="utf-8") as fh:
        json.dump({p: g for p, g in wanted.items() if g}, fh)  # JSON is YAML
    results = {}
    started = time.monotonic()
    # salt-cloud's output goes to files: a pipe nobody reads while the bus is watched would fill and block it.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr, \
            salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
        cloud = subprocess.Popen(  # noqa: S603 - salt-cloud of this master, arguments from the site
            [_salt_cloud(), "-c", os.path.dirname(_cloud_config()), "-m", mapfile, "-P", "-y", "--out", "json",
             "--no-color"], stdout=stdout, stderr=stderr, text=True)
        deadline = started + float(timeout)
        while time.monotonic() < deadline:
            if cloud.poll() is not None and (cloud.returncode or set(results) >= set(names) - set(held)):
                break
            event = bus.get_event(wait=1, full=True)
            if not event:
                continue
            tag, data = event["tag"], event["data"]
            if tag.startswith("salt/job/") and "/ret/" in tag and data.get("fun") == "state.highstate" \
                    and data.get("id") in names and data.get("id") not in results:
                results[data["id"]] = {**bringup.summarize(data.get("return"), time.monotonic() - started),
                                       "action": "created"}
        if cloud.poll() is None:
            cloud.kill()
        cloud.wait()
        created_ok = cloud.returncode == 0
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if not created_ok:
        return results, {"step": "provision", "guest": ", ".join(sorted(set(names) - set(results))),
                         "message": f"salt-cloud -m could not create {', '.join(sorted(names))}:\n"
                                    f"{(out or '')[-3000:]}\n{(err or '')[-3000:]}"}
    missing = sorted(set(names) - set(held) - set(results))
    if missing:
        at_provider = _existing()
        gone = [n for n in missing if n not in at_provider]
        if gone:
            return results, {"step": "provision", "guest": ", ".join(gone),
                             "message": f"salt-cloud's provider has no instance named {', '.join(gone)} after "
                                        f"salt-cloud -m"}
        return results, {"step": "highstate", "guest": ", ".join(missing),
                         "message": f"no first highstate came back from {', '.join(missing)} within {timeout}s "
                                    f"of their creation (the salt/cloud/<name>/created reactor starts it; see "
                                    f"the master's log)"}
    return results, None


def _answering(client, names, timeout):
    """The names that have not answered a ping within ``timeout`` seconds."""
    deadline = time.monotonic() + float(timeout)
    missing = list(names)
    while missing:
        answered = client.cmd(missing, "test.ping", tgt_type="list", timeout=10)
        missing = [n for n in missing if answered.get(n) is not True]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(2)
    return missing


def _highstate(client, names, timeout, test=False, queue=False):
    """``queue``: wait for a state run still going on the minion (a held guest's base) instead of failing."""
    from sitectl import bringup

    started = time.monotonic()
    results = {}
    kwarg = {**({"test": True} if test else {}), **({"queue": True} if queue else {})} or None
    for reply in client.cmd_iter(names, "state.highstate", tgt_type="list", kwarg=kwarg, timeout=timeout):
        for minion, data in reply.items():
            results[minion] = bringup.summarize(data.get("ret"), time.monotonic() - started)
    for name in names:
        results.setdefault(name, {**bringup.summarize(["no return from the minion"]), "seconds": round(
            time.monotonic() - started, 1)})
    return results


def _again_after_an_exception(client, results, guests, timeout):
    """A highstate whose minion function raised (Salt broke inside the run: no state result at all) is
    run once more; the first exception stays in the guest's result (``retried``) and is said. A state
    that failed is a failure, never run again here."""
    raised = [g for g in guests if results.get(g, {}).get("exception")]
    if not raised:
        return
    for guest in raised:
        _say(f"  {guest}: the highstate raised inside Salt ({results[guest]['exception']}); run once more")
    again = _highstate(client, raised, timeout)
    for guest in raised:
        results[guest] = {**again[guest], "action": results[guest].get("action", "converged"),
                          "retried": results[guest]["exception"]}


def _after_minion_restarts(client, results, guests, timeout, pause=8.0):
    """Wait until the minions whose highstate scheduled their own restart (common.minion) have restarted:
    a publication sent while one restarts is lost (seen: the lab's Vault unseal right after the Vault
    guest's first highstate never came back). The restart waits for a moment with no job of the
    minion's, so the checks leave ``pause`` seconds between them."""
    from sitectl import bringup

    waiting = [g for g in guests if results.get(g, {}).get("restarts_minion")]
    deadline = time.monotonic() + float(timeout)
    while waiting and time.monotonic() < deadline:
        time.sleep(pause)
        answered = client.cmd(waiting, "cmd.run_all", [bringup.MINION_RESTART_CHECK], tgt_type="list", timeout=5)
        waiting = [g for g in waiting if not bringup.minion_restart_over(answered.get(g))]
    for guest in waiting:
        _say(f"  {guest}: its minion's restart after its highstate did not finish within {timeout}s")


def _converge(client, names, answer_timeout, timeout, fresh=False):
    """Existing guests: each must answer; highstated only when test=True shows a change or a failure.
    ``fresh`` guests (created ahead, never highstated) are highstated at once, queued behind their base."""
    silent = _answering(client, names, answer_timeout)
    if silent:
        return {}, {"step": "minion", "guest": ", ".join(silent),
                    "message": f"{', '.join(silent)} exist(s) at the provider but the minion did not answer "
                               f"within {answer_timeout}s (is the guest running? its key accepted? "
                               f"`salt-key -L`, `salt {silent[0]} test.ping`)"}
    if fresh:
        return {n: {**s, "action": "created"} for n, s in _highstate(client, names, timeout, queue=True).items()}, None
    checked = _highstate(client, names, timeout, test=True)
    pending = sorted(n for n, s in checked.items() if s["changed"] or s["failed"])
    results = {n: {**s, "action": "unchanged"} for n, s in checked.items() if n not in pending}
    if pending:
        results.update({n: {**s, "action": "converged"} for n, s in _highstate(client, pending, timeout).items()})
    return results, None


def _vault_status(client, guest, attempts=6, pause=5.0):
    """(url on the guest's address, CA path on the guest, Vault's seal status) without a token."""
    for attempt in range(1, attempts + 1):
        try:
            high = client.cmd(guest, "state.show_sls", ["vault.unseal"], timeout=60).get(guest)
            if not isinstance(high, dict) or "vault-unseal-unsealed" not in high:
                raise RuntimeError(f"vault.unseal does not render on {guest}: {high}")
            args = {}
            for item in high["vault-unseal-unsealed"]["vault_server"]:
                if isinstance(item, dict):
                    args.update(item)
            status = client.cmd(guest, "vault_server.status", kwarg={"url": args["url"], "verify": args["verify"]},
                                timeout=60).get(guest)
            if not isinstance(status, dict) or "initialized" not in status:
                raise RuntimeError(f"vault_server.status failed on {guest}: {status}")
            return args["url"], args["verify"], status
        except RuntimeError:
            if attempt == attempts:
                raise
            time.sleep(pause)
    raise RuntimeError("unreachable")


def _vault_gate(client, pillar, guest, summary):
    """None when the Vault on ``guest`` is ready for its consumers, else the stop (operator step or failure)."""
    from sitectl import bringup

    if summary["failed"] and set(summary["failed_sls"]) - bringup.WAITS_FOR_OPERATOR:
        return None  # an ordinary failure: reported as such by the caller
    try:
        url, ca_path, status = _vault_status(client, guest)
    except RuntimeError as exc:
        return {"step": "highstate", "guest": guest, "message": f"Vault on {guest} does not answer: {exc}"}
    guest_address = pillar["site"]["guests"][guest]["address"].split("/")[0]
    public_url = f"https://{guest_address}:{url.rsplit(':', 1)[1]}"
    threshold = ((pillar.get("vault") or {}).get("init") or {}).get("secret_threshold")
    step = None
    if not status.get("initialized"):
        step = "initialise"
    elif status.get("sealed"):
        step = "unseal"
    elif not __opts__.get("platform_vault"):
        step = "master-credentials"
    if step:
        return {"step": step, "guest": guest, "url": public_url,
                "message": bringup.vault_operator_message(step, guest, public_url, ca_path,
                                                          pillar["site"].get("name", __opts__.get("platform_site")),
                                                          threshold)}
    return None


def plan():
    """
    The phases of the site's bring-up, in order (nothing is applied).

    CLI Example:

    .. code-block:: bash

        salt-run bringup.plan
    """
    from sitectl import bringup

    pillar = _site_pillar()
    if pillar.get("_errors"):
        return {"result": False, "comment": "the site is invalid:\n" + "\n".join(pillar["_errors"])}
    try:
        return {"result": True, "phases": bringup.phases(pillar)}
    except bringup.OrderError as exc:
        return {"result": False, "comment": str(exc)}


def up(answer_timeout=180, create_timeout=1800, highstate_timeout=1800, ahead=True):
    """
    Bring the site up: create what is missing and converge what is not converged, phase by phase;
    stop at the first failure or for the Vault operators.

    Returns ``result`` (True when every guest is converged), ``phases``, ``guests`` (per guest: the
    action, ok/changed/failed counts, the failed states) and, when it stopped, ``stopped`` (the phase,
    the step, the guest and the message).

    ``ahead=False`` creates each guest in its own phase only (see the module's notes).

    CLI Example:

    .. code-block:: bash

        salt-run bringup.up
    """
    from sitectl import bringup

    pillar = _site_pillar()
    if pillar.get("_errors"):
        message = "the site is invalid:\n" + "\n".join(pillar["_errors"])
        _say(message)
        return {"result": False, "phases": [], "guests": {},
                "stopped": {"phase": 0, "step": "site", "guest": "", "message": message}}
    try:
        phases = bringup.phases(pillar)
    except bringup.OrderError as exc:
        _say(str(exc))
        return {"result": False, "phases": [], "guests": {},
                "stopped": {"phase": 0, "step": "order", "guest": "", "message": str(exc)}}
    vault_converges = pillar.get("roles", {}).get("vault", {}).get("converge", True) is not False
    results = {}
    ret = {"result": True, "phases": phases, "guests": results}
    try:
        existing = _existing()
    except Exception as exc:  # noqa: BLE001 - salt-cloud raises many kinds; each means "not known"
        message = f"salt-cloud could not list its provider's guests: {str(exc).strip()[-1500:]}"
        _say(message)
        return {**ret, "result": False, "stopped": {"phase": 0, "step": "provider", "guest": "", "message": message}}
    total = len(phases)
    timeouts = {"answer": answer_timeout, "create": create_timeout, "highstate": highstate_timeout}
    with salt.client.get_local_client(mopts=__opts__) as client:
        for number, guests in enumerate(phases, 1):
            name = f"bring-up phase {number}/{total}: {bringup.phase_title(pillar, guests)}"
            t0 = time.monotonic()
            _say(f"[{_now()}] {name}: started")
            later = bringup.created_ahead(phases, number, existing, vault_converges) if ahead else []
            stop = _phase(client, pillar, guests, existing, results, timeouts, vault_converges, later)
            if not stop:
                failed = [g for g in guests if results.get(g, {}).get("failed")]
                if failed:
                    stop = {"step": "highstate", "guest": ", ".join(failed),
                            "message": "\n".join(bringup.failure_message(g, results[g], number, total)
                                                 for g in failed)}
            seconds = time.monotonic() - t0
            if stop:
                stop["phase"] = number
                _say(f"[{_now()}] {name}: stopped after {seconds:.1f}s")
                _say(stop["message"])
                ret.update(result=False, stopped=stop)
                return ret
            actions = ", ".join(f"{g} {results[g]['action']}" for g in guests)
            _say(f"[{_now()}] {name}: done in {seconds:.1f}s ({actions})")
    return ret


def _create_new(pillar, new, ahead, existing, results, timeouts):
    """salt-cloud -m for a phase's new guests and the later ones created ``ahead`` (held). The stop or None."""
    from sitectl import bringup

    if not new and not ahead:
        return None
    if ahead:
        # Held until their phases come: long enough for this bring-up's creations and highstates.
        bringup.hold(__opts__["cachedir"], ahead, timeouts["create"] + 2 * timeouts["highstate"])
    _say("  creating " + "; ".join(filter(None, [
        new and f"{', '.join(new)} (salt-cloud -m; their first highstate by the created reactor)",
        ahead and f"ahead of their phases, {', '.join(ahead)} (their base now: {bringup.AHEAD_SLS})"])))
    created, stop = _create([*new, *ahead], pillar, timeouts["create"], held=set(ahead))
    results.update(created)
    existing |= set(new) | set(ahead)
    return stop


def _phase(client, pillar, guests, existing, results, timeouts, vault_converges, ahead=()):
    """One phase: create the new guests (and ``ahead``, the later phases' new guests, held), converge the
    existing ones, then Vault's gate. The stop or None."""
    from sitectl import bringup

    cachedir = __opts__["cachedir"]
    new = [g for g in guests if g not in existing]
    stop = _create_new(pillar, new, ahead, existing, results, timeouts)
    if stop:
        return stop
    fresh = sorted(bringup.held(cachedir) & set(guests))
    old = [g for g in guests if g not in new and g not in fresh]
    for names, is_fresh in ((fresh, True), (old, False)):
        if not names:
            continue
        converged, stop = _converge(client, names, timeouts["answer"], timeouts["highstate"], fresh=is_fresh)
        results.update(converged)
        if is_fresh:
            bringup.release(cachedir, names)
        if stop:
            return stop
    _again_after_an_exception(client, results, guests, timeouts["highstate"])
    _after_minion_restarts(client, results, guests, timeouts["answer"])
    for guest in guests if vault_converges else ():
        if "vault" not in pillar["site"]["guests"][guest].get("roles", []):
            continue
        if _answering(client, [guest], timeouts["answer"]):  # its highstate may restart the minion
            return {"step": "minion", "guest": guest,
                    "message": f"{guest} did not answer within {timeouts['answer']}s after its highstate"}
        stop = _vault_gate(client, pillar, guest, results[guest])
        if stop:
            return stop
        if results[guest]["failed"] and not set(results[guest]["failed_sls"]) - bringup.WAITS_FOR_OPERATOR:
            # Unsealed since that run: once more.
            results[guest] = {**_highstate(client, [guest], timeouts["highstate"])[guest], "action": "converged"}
    return None
