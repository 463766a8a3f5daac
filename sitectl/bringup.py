"""The order a site comes up in, and what the bring-up says when it stops.

Pure functions over the site's validated pillar: the master's runner (``_runners/bringup.py``) walks
the phases, ``sitectl lab up`` drives that runner, and the render tier tests them without a master.

The order comes from the site, not from a list of guests: a guest comes after

- every guest it ``uses`` and every guest with a role one of its roles ``needs`` (role catalog);
- every guest with a role of ``FIRST_ROLES`` (Vault: every other role reads its secrets there);
- for a guest with a role of ``ROUTER_ROLES`` (the reverse proxy), the guest of the route its mail
  certificate is handed to (the master seals it for that guest's minion key the moment it is
  issued); the other routes' guests need not be up (nginx answers 502 until they are, and the
  certificates are the proxy's own);
- for a guest with a role of ``LAST_ROLES`` (monitoring), the k3s guests when their kubelets are
  scraped (the k3s server writes the scraper's token into Vault); its targets come from the site, so
  the rest of the site need not be up.

Only what a guest's highstate really reads from another guest orders them: guests with no order
between them form one phase and converge in parallel (the lab's bring-up time is the sum of the
phases).

Guests of the later phases are created ahead, in the ``salt-cloud -m`` of the phase after Vault's
(while that phase converges): the bring-up *holds* them (``hold``), and the provision flow
(``_runners/platform.py``) then gives a held guest only its base (``AHEAD_SLS``: the one apt
transaction of its packages and its firewall, which read nothing from another guest) instead of its
highstate. Its highstate comes in its own phase, queued behind that base run.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager

FIRST_ROLES = ("vault",)
ROUTER_ROLES = ("reverse_proxy",)
LAST_ROLES = ("monitoring",)
# Before Vault's operator has initialised and unsealed it, the vault guest's highstate fails in this
# SLS (and skips what requires it); anything else failing is a failure of its own.
WAITS_FOR_OPERATOR = frozenset({"vault.unseal"})
# common.minion's state that schedules the minion's restart once none of its jobs runs (a changed
# minion config: a new guest's first highstate). A publication sent while it restarts is lost, so the
# bring-up waits for that restart before it publishes anything else to the guest.
MINION_RESTART_STATE = "common-minion-restart-scheduled"
MINION_RESTART_UNIT = "platform-salt-minion-restart"
MINION_RESTART_CHECK = f"systemctl is-active {MINION_RESTART_UNIT}"


def minion_restart_over(answer) -> bool:
    """A guest's ``cmd.run_all`` answer to ``MINION_RESTART_CHECK``: True once its minion's scheduled
    restart is over (or none was scheduled); no answer (the minion restarting) is not over."""
    return isinstance(answer, dict) and str(answer.get("stdout", "")).strip() not in ("active", "activating")
# What a guest created ahead of its phase gets at once (with the custom modules synced first): its
# packages, in the guest's one apt transaction (common.apt), then its firewall (common.firewall
# includes common.apt). Neither reads a secret or another guest, and the services those packages
# start are behind the site's firewall before the guest waits for its phase. The minion keeps its
# connections to the master through the firewall's first load only because the ruleset lets their
# picked-up packets in (salt/common/files/nftables.conf.j2): before that, 4 of 5 held guests stopped
# answering until TCP keepalive noticed, minutes later. Not common.minion: the minion restart it
# schedules once no job runs raced with the phase's highstate, whose publication the restarting
# minion missed.
AHEAD_SLS = "common.firewall"
HOLD_FILE = "bringup-held.json"


def created_ahead(phases: list[list[str]], number: int, existing, vault_converges: bool = True) -> list[str]:
    """The guests phase ``number`` (from 1) creates ahead of their own phases: the missing guests of every
    later phase, in the phase after Vault's (the first phase when Vault does not converge). Not in
    Vault's own phase: in the one lab run made that way, ten base transactions beside Vault's first
    highstate made that phase 302 s instead of about 80, and the operators' steps wait for it."""
    if number != (2 if vault_converges and len(phases) > 1 else 1):
        return []
    return [g for later in phases[number:] for g in later if g not in existing]


def _hold_path(cachedir: str) -> str:
    return os.path.join(cachedir, "platform", HOLD_FILE)


def held(cachedir: str, now: float | None = None) -> set[str]:
    """The guests the bring-up created ahead of their phase and has not highstated yet. A hold ends
    at its ``until`` (a bring-up that died does not hold a guest for ever: a later bring-up then
    checks such a guest with ``test=True`` like any existing one)."""
    try:
        with open(_hold_path(cachedir), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or not isinstance(data.get("names"), list):
        return set()
    if float(data.get("until") or 0) <= (time.time() if now is None else now):
        return set()
    return {n for n in data["names"] if isinstance(n, str)}


def _write_held(cachedir: str, names: set[str], until: float) -> None:
    path = _hold_path(cachedir)
    if not names:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"names": sorted(names), "until": until}, fh)
    os.replace(tmp, path)


def hold(cachedir: str, names, seconds: float) -> None:
    """Hold ``names`` (with those still held) for ``seconds`` from now."""
    _write_held(cachedir, held(cachedir) | set(names), time.time() + float(seconds))


def release(cachedir: str, names) -> None:
    """``names`` got their highstate: no longer held."""
    try:
        with open(_hold_path(cachedir), encoding="utf-8") as fh:
            until = float(json.load(fh).get("until") or 0)
    except (OSError, ValueError, AttributeError):
        until = 0.0
    _write_held(cachedir, held(cachedir) - set(names), until)


class OrderError(ValueError):
    """The site's relations form a cycle: no order can satisfy them."""


def _with_any(guests: dict, roles) -> set[str]:
    return {name for name, g in guests.items() if set(g.get("roles", [])) & set(roles)}


def dependencies(pillar: dict) -> dict[str, set[str]]:
    """guest -> the guests that must be converged before it."""
    site, catalog = pillar["site"], pillar.get("roles", {})
    guests = site["guests"]
    first, last = _with_any(guests, FIRST_ROLES), _with_any(guests, LAST_ROLES)
    handover = _mail_route_guests(pillar)
    scraped_k3s = _with_any(guests, ["k3s"]) if _kubelets_scraped(pillar) else set()
    out: dict[str, set[str]] = {}
    for name, guest in guests.items():
        roles = guest.get("roles", [])
        after = {u for u in guest.get("uses", []) if u in guests}
        for role in roles:
            after |= _with_any(guests, catalog.get(role, {}).get("needs", []))
        if name not in first:
            after |= first
        if set(roles) & set(ROUTER_ROLES):
            after |= handover
        if name in last:
            after |= scraped_k3s
        out[name] = after - {name}
    return out


def _mail_route_guests(pillar: dict) -> set[str]:
    """The guest of the route the proxy hands its mail certificate to (reverse_proxy:mail_certificate)."""
    from sitectl import roles as roles_of

    site = pillar["site"]
    try:
        route = roles_of.parameters(pillar, "reverse_proxy")["mail_certificate"]["route"]
    except KeyError:
        return set()
    guest = ((site.get("routes") or {}).get(route) or {}).get("guest")
    return {guest} if guest in site["guests"] else set()


def _kubelets_scraped(pillar: dict) -> bool:
    """Whether monitoring scrapes the k3s kubelets: its exporter for k3s, with k3s's install part on."""
    from sitectl import roles as roles_of

    try:
        exporters = roles_of.parameters(pillar, "monitoring")["exporters"].get("k3s") or {}
        k3s = roles_of.parameters(pillar, "k3s")
    except KeyError:
        return False
    return any(roles_of.part_converges(k3s, spec["part"]) if spec.get("part") else True
               for spec in exporters.values())

def phases(pillar: dict) -> list[list[str]]:
    """The guests in phases: each phase only after every guest of the phases before it."""
    deps = dependencies(pillar)
    done: set[str] = set()
    out: list[list[str]] = []
    while len(done) < len(deps):
        ready = sorted(n for n, after in deps.items() if n not in done and after <= done)
        if not ready:
            stuck = sorted(n for n in deps if n not in done)
            raise OrderError("no bring-up order: these guests wait on each other through `uses`, the roles' "
                             "`needs` or the routes: " + ", ".join(f"{n} after {sorted(deps[n] - done)}"
                                                                    for n in stuck))
        out.append(ready)
        done |= set(ready)
    return out


def phase_title(pillar: dict, guests: list[str]) -> str:
    """`vault (vault)` style: the guests of a phase with their roles."""
    site = pillar["site"]["guests"]
    return ", ".join(f"{n} ({','.join(site[n].get('roles', [])) or 'base'})" for n in guests)


# What Salt's minion returns when the function itself raised (not a state: each state's errors are
# its own result). Salt broke inside the run, before or around the states; the bring-up runs such a
# highstate once more and reports the first exception (salt/_runners/bringup.py).
MINION_EXCEPTION = "The minion function caused an exception"


def exception_line(text: str) -> str:
    """The last line of a traceback: the exception's type and message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else text[:500]


def summarize(ret, seconds: float = 0.0) -> dict:
    """A highstate return as ok/changed/failed counts, the failed states (id, SLS, comment) and the SLS
    of the states that ran and failed (not those skipped because a requisite failed)."""
    out = {"ok": 0, "changed": 0, "failed": 0, "seconds": round(seconds, 1), "errors": [], "failed_sls": []}
    if not isinstance(ret, dict):
        out["failed"] = 1
        out["errors"] = [str(line) for line in (ret if isinstance(ret, list) else [ret])]
        if str(ret).startswith(MINION_EXCEPTION):
            out["exception"] = exception_line(str(ret))
        return out
    failed_sls = set()
    for state_id, state in sorted(ret.items(), key=lambda kv: (kv[1] or {}).get("__run_num__", 0)
                                  if isinstance(kv[1], dict) else 0):
        if not isinstance(state, dict):
            out["failed"] += 1
            out["errors"].append(f"{state_id}: {state}")
        elif state.get("result") is False:
            out["failed"] += 1
            out["errors"].append(f"{state.get('__id__', state_id)} (sls {state.get('__sls__')}): "
                                 f"{str(state.get('comment'))[-600:]}")
            if state.get("__state_ran__", True):
                failed_sls.add(str(state.get("__sls__")))
        elif state.get("changes") or state.get("result") is None:  # None: test=True, would change
            out["changed"] += 1
            if state.get("__id__") == MINION_RESTART_STATE and state.get("changes"):
                out["restarts_minion"] = True
        else:
            out["ok"] += 1
    out["failed_sls"] = sorted(failed_sls)
    return out


def failure_message(guest: str, summary: dict, phase: int, total: int) -> str:
    """What the bring-up says when a guest's highstate failed: the guest, each failed state, how to go on."""
    states = "\n".join(f"  {line}" for line in summary["errors"][:10]) or "  (no state result)"
    return (f"bring-up stopped in phase {phase}/{total}: the highstate of {guest} failed "
            f"({summary['failed']} failed):\n{states}\n"
            f"Fix it, then run the bring-up again: it goes on from there (`salt {guest} state.highstate` "
            f"shows the run).")


def vault_operator_message(step: str, guest: str, url: str, ca_path: str, site_name: str,
                           threshold: int | None = None) -> str:
    """The exact operator steps (docs/vault.md) a production bring-up stops for."""
    again = "Then run the bring-up again (`salt-run bringup.up`): it goes on from the Vault guest."
    init_file = f"/root/vault-init/{site_name}.json"
    unseal = (f"  Each operator decrypts their share into a file on a tmpfs of {guest} (mode 0600):\n"
              f"    jq -r '.unseal_keys_pgp[N]' {init_file} | base64 -d | gpg -d > /run/vault-unseal/<operator>\n"
              f"  then, on the master, with every operator's file named (paths only, never keys):\n"
              f"    salt {guest} state.apply vault.unseal pillar='{{\"vault\": {{\"unseal\": "
              f"{{\"key_files\": [\"/run/vault-unseal/<operator>\", ...]}}}}}}'\n"
              f"  and the files are removed.\n")
    if step == "initialise":
        return (f"bring-up stopped for the Vault operators: Vault on {guest} ({url}) is not initialised "
                f"(docs/vault.md, 'Bootstrap of a new site', steps 3-5).\n"
                f"  On the master, once (the ciphertext goes to a new file; {guest}:{ca_path} is the public CA):\n"
                f"    salt-run salt.cmd vault_server.initialize \"<the operators' public keys, a YAML list>\" "
                f"\"<the root-token holder's public key>\" {init_file} "
                f"secret_threshold={threshold or '<shares needed>'} url={url} verify=/root/vault-init/ca.crt\n"
                f"{unseal}"
                f"  The root-token holder writes the policies salt_master, salt_role_vault and raft_snapshot, the "
                f"AppRole salt-master and the master's credentials (.salt/etc/vault-master.yaml and "
                f".salt/etc/master.d/vault.conf), the snapshot token, revokes the root token (docs/vault.md "
                f"step 5) and restarts the master.\n{again}")
    if step == "unseal":
        return (f"bring-up stopped for the Vault operators: Vault on {guest} ({url}) is sealed "
                f"(docs/vault.md, 'After a restart: unseal').\n{unseal}{again}")
    if step == "master-credentials":
        return (f"bring-up stopped for the Vault operators: Vault on {guest} ({url}) is unsealed but the master "
                f"has no AppRole credentials (no sdb profile `platform_vault`; docs/vault.md step 5).\n"
                f"  The root-token holder writes .salt/etc/vault-master.yaml (mode 0600) and "
                f".salt/etc/master.d/vault.conf as docs/vault.md shows, and restarts the master.\n{again}")
    raise ValueError(f"unknown Vault operator step {step!r}")


@contextmanager
def phase(name: str, timings: dict | None = None, key: str | None = None, out=None):
    """One line when ``name`` starts and one when it ends, with its time, each flushed at once (so a
    log that is not a terminal shows the progress as it happens)."""
    import sys

    stream = out or sys.stdout
    t0 = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: started", file=stream, flush=True)
    try:
        yield
    except BaseException:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: failed after {time.monotonic() - t0:.1f}s",
              file=stream, flush=True)
        raise
    seconds = round(time.monotonic() - t0, 1)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {seconds:.1f}s", file=stream, flush=True)
    if timings is not None and key:
        timings[key] = seconds
