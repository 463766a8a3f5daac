"""
salt-cloud driver ``proxmox_platform``: the site's guests on Proxmox VE, through its API with proxmoxer.

What a guest is (VMID or none, node, cores, memory, disk, address, protection, tags) comes from the
site: the master's own pillar for that minion id, validated by the ``platform`` ext_pillar
(``platform:guest``). The profile says only how a guest is built: an LXC container from an OS
template (``image``) or a QEMU VM cloned from a template (``clone_from``, a name or a VMID) and
configured with cloud-init. Profile and provider values are parsed strictly before the first API
call; a key the site owns (cores, memory, ...) in a profile is refused.

Ownership: every guest the driver makes carries a mark in its description (a line
``salt-platform: site=S guest=G vmid=V run=R``) and the tag ``salt-platform``. ``destroy`` and the
power actions act only on a guest whose name, VMID, node and mark all agree with the site, and say
which differs otherwise. The cleanup after a failed create removes a guest only if it carries this
very run's mark (``run=``); anything else is reported and left alone.

Every PVE task is awaited by its UPID and its ``exitstatus`` checked. Transient answers (5xx that
PVE gives under load, lock timeouts, a held lock, lost quorum, connection errors, timeouts of reads)
are retried with backoff, a task that failed for such a reason is started again; everything else
fails at once with PVE's own text.

Provider configuration (rendered by ``sitectl master-config --provider proxmox`` from
``etc/providers/proxmox.conf.j2``)::

    platform:
      driver: proxmox_platform
      url: https://pve.example.org:8006
      token_id: 'salt@pve!platform'
      token_secret_env: PVE_TOKEN_SECRET      # or token_secret: sdb://<profile>/<path>
      verify_ssl: true
      ca_bundle: /etc/ssl/certs/pve-ca.pem    # optional
      node: pve                                # when the site names none
      bootstrap: official                      # or none (keys accepted, nothing installed)

The token secret is never read from a file: it comes from the environment variable named by
``token_secret_env`` or from an ``sdb://`` URI (Vault through saltext-vault's sdb module).
See docs/proxmox.md.
"""

import fcntl
import ipaddress
import logging
import os
import re
import secrets
import signal
import sys
import time
import urllib.parse

import salt.output
import salt.utils.cloud
import salt.utils.sdb
from salt.exceptions import SaltCloudConfigError, SaltCloudNotFound, SaltCloudSystemExit

from salt import config

try:
    import proxmoxer
    import requests
    from proxmoxer.core import ResourceException

    HAS_LIBS = True
except ImportError:  # pragma: no cover - proxmoxer is a dependency of the project
    HAS_LIBS = False

log = logging.getLogger(__name__)

__virtualname__ = "proxmox_platform"

# PVE answers 500 both for errors that a retry cures (a config lock held by another task, lost
# quorum) and for errors that will never go away; the first pattern wins.
_TRANSIENT_TEXT = re.compile(
    r"got timeout|is locked|no quorum|cluster not ready|temporarily|try again|no route to host",
    re.IGNORECASE,
)
_PERMANENT_500 = re.compile(
    r"already exists|does not exist|already running|not running|protection mode|unable to|no such|"
    r"not allowed|invalid|cannot|can't|only root|permission|parameter verification",
    re.IGNORECASE,
)
_TRANSIENT_STATUS = {502, 503, 504, 595, 596, 599}
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)

# The mark a guest made by this driver carries in its description (one line of it).
MARK_TAG = "salt-platform"
_MARK = re.compile(
    r"^salt-platform: site=(?P<site>\S+) guest=(?P<guest>\S+) vmid=(?P<vmid>\d+) run=(?P<run>\S+)\s*$",
    re.MULTILINE,
)
# Keys whose value the site gives; a profile or provider that sets one is refused, never ignored.
_SITE_KEYS = ("vmid", "cores", "memory", "disk", "address", "protection", "tags")
_POWER = {"start": "running", "stop": "stopped", "shutdown": "stopped", "reboot": "running"}


def __virtual__():
    if not HAS_LIBS:
        return False, "proxmoxer and requests are needed by the proxmox_platform driver"
    if get_configured_provider() is False:
        return False, "no proxmox_platform provider is configured"
    return __virtualname__


def get_configured_provider():
    from sitectl.cloud import configured_provider

    active = globals().get("__active_provider_name__")
    return configured_provider(__opts__, active, __virtualname__, ("url", "token_id"))


def _value(key, vm_):
    """A profile value, else the provider's; None if neither sets it."""
    return config.get_cloud_config_value(key, vm_, __opts__, default=None, search_global=False)


# -- typed settings --------------------------------------------------------------------------------

_BOOLEANS = {"true": True, "yes": True, "on": True, "y": True, "1": True,
             "false": False, "no": False, "off": False, "n": False, "0": False}


def _as_bool(key, value):
    """YAML's booleans (true/false, yes/no, on/off in any case) and PVE's 1/0; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise SaltCloudConfigError(f"{key}: got {value!r}; expected true or false (yes/no, on/off, 1/0)")


def _as_number(kind, minimum, maximum=None):
    def parse(key, value):
        text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        try:
            number = kind(text) if text is not None else None
        except ValueError:
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            bounds = f"from {minimum:g}" + (f" to {maximum:g}" if maximum is not None else "")
            noun = "an integer" if kind is int else "a number"
            raise SaltCloudConfigError(f"{key}: got {value!r}; expected {noun} {bounds}")
        return number

    return parse


def _as_choice(*choices):
    def parse(key, value):
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise SaltCloudConfigError(f"{key}: got {value!r}; expected one of: {', '.join(choices)}")

    return parse


def _as_text(key, value):
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise SaltCloudConfigError(f"{key}: got {value!r}; expected a non-empty string")
    return str(value).strip()


# key: (parser, default). Read from the profile, else the provider.
_SETTINGS = {
    "unprivileged": (_as_bool, True),
    "onboot": (_as_bool, True),
    "agent": (_as_bool, True),
    "full_clone": (_as_bool, True),
    "verify_ssl": (_as_bool, True),
    "swap": (_as_number(int, 0, 1024 * 1024), 512),
    "timeout": (_as_number(float, 0.1), 30.0),
    "retries": (_as_number(int, 0, 20), 3),
    "backoff": (_as_number(float, 0), 1.0),
    "task_timeout": (_as_number(float, 1), 600.0),
    "cleanup_timeout": (_as_number(float, 1), 300.0),
    "shutdown_timeout": (_as_number(int, 1, 86400), 60),
    "ip_timeout": (_as_number(float, 0), 120.0),
    "ip": (_as_choice("static", "dhcp"), "static"),
    "bootstrap": (_as_choice("official", "none"), "official"),
    "image": (_as_text, None),
    "clone_from": (_as_text, None),
    "storage": (_as_text, None),
    "bridge": (_as_text, None),
    "ciuser": (_as_text, "platform"),
    "disk_key": (_as_text, "scsi0"),
    "features": (_as_text, None),
    "ssh_public_key": (_as_text, None),
    "ca_bundle": (_as_text, None),
    "node": (_as_text, None),
}


def _settings(vm_=None):
    """Every setting of the profile (``vm_``) and provider, typed; a wrong one names its key. No API call."""
    source = vm_ if vm_ is not None else get_configured_provider()
    where = f"profile {vm_.get('profile')!r}" if vm_ is not None else "the provider config"
    for key in _SITE_KEYS:
        given = _value(key, source)
        if given is not None:
            raise SaltCloudConfigError(
                f"{key}: {given!r} is set in {where}, but a guest's {key} comes from the site "
                f"(site.guests.<name>.{key}); remove it there"
            )
    out = {}
    for key, (parse, default) in _SETTINGS.items():
        given = _value(key, source)
        out[key] = default if given is None else parse(key, given)
    return out


# -- errors ----------------------------------------------------------------------------------------


class PveApiError(SaltCloudSystemExit):
    """An API request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message, status=0, pve_text=""):
        super().__init__(message)
        self.status = status
        self.pve_text = pve_text


class PveTaskError(SaltCloudSystemExit):
    """A PVE task ended with an exit status other than OK, or did not end in time."""

    def __init__(self, message, upid, timed_out=False, exitstatus=""):
        super().__init__(message)
        self.upid = upid
        self.timed_out = timed_out
        self.transient = bool(_TRANSIENT_TEXT.search(exitstatus))


class QueryFailed(SystemExit):
    """A listing that could not be complete. salt-cloud turns any Exception raised by a listing into an
    empty result and exit code 0; a SystemExit reaches its error handler, which prints the message and
    exits non-zero.

    Listings run in a pool worker that salt-cloud terminates (SIGTERM) on this error. The worker inherits
    salt-cloud's SIGTERM handler, which logs and exits and can deadlock there on a lock held at fork time,
    leaving salt-cloud waiting for the worker forever: the worker takes SIGTERM's default action instead."""

    def __init__(self, message):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        super().__init__(message)


def _pve_message(exc):
    """PVE's own text of a failed request: the status line's reason and the per-field errors."""
    text = str(getattr(exc, "content", "") or "").strip()
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        details = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))
        text = f"{text} ({details})" if text else details
    return text or str(exc)


# -- the API client --------------------------------------------------------------------------------


class Api:
    """proxmoxer with timeouts, retries of transient errors and task waiting."""

    def __init__(self, url, token_id, secret, verify, timeout, retries, backoff):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise SaltCloudConfigError(f"url: {url!r} is not an https:// URL of the PVE API (https://host:8006)")
        user, sep, token_name = token_id.partition("!")
        if not sep or "@" not in user or not token_name:
            raise SaltCloudConfigError(f"token_id: {token_id!r} is not an API token id 'user@realm!tokenid'")
        self.url = url
        self.token_id = token_id
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.calls = 0
        self.pve = proxmoxer.ProxmoxAPI(
            parsed.hostname, port=parsed.port or 8006, user=user, token_name=token_name, token_value=secret,
            verify_ssl=verify, timeout=timeout, service="PVE",
        )
        self.timeout = timeout

    def _pause(self, attempt, what, why):
        delay = self.backoff * 2 ** (attempt - 1)
        log.warning("%s failed (%s); retrying in %.1f s (%d/%d)", what, why, delay, attempt, self.retries)
        time.sleep(delay)

    def request(self, method, path, retry=True, **params):
        """One API call; transient failures are retried ``retries`` times with exponential backoff."""
        attempts = self.retries + 1 if retry else 1
        for attempt in range(1, attempts + 1):
            self.calls += 1
            try:
                return getattr(self.pve(path), method)(**params)
            except ResourceException as exc:
                status, message = exc.status_code, _pve_message(exc)
                transient = status in _TRANSIENT_STATUS or (
                    status == 500 and (_TRANSIENT_TEXT.search(message) or not _PERMANENT_500.search(message)))
                if status == 401:
                    raise PveApiError(
                        f"PVE refused the API token {self.token_id!r} ({status}: {message}): check that the token "
                        f"exists, is not expired, and that the secret given to salt-cloud (token_secret_env or "
                        f"token_secret in the provider config) is the one PVE showed when the token was made",
                        status, message,
                    ) from exc
                if status == 403:
                    raise PveApiError(
                        f"{method.upper()} /{path}: PVE denied it ({status}: {message}): grant the token's role "
                        f"the privilege named there (docs/proxmox.md lists the role the driver needs)", status, message,
                    ) from exc
                if not transient or attempt == attempts:
                    tried = f" (tried {attempt} times)" if attempt > 1 else ""
                    raise PveApiError(f"{method.upper()} /{path}: PVE answered {status}: {message}{tried}",
                                      status, message) from exc
                why = f"{status} {message}"
            except requests.exceptions.SSLError as exc:
                raise PveApiError(
                    f"TLS verification of {self.url} failed ({exc}): give the PVE CA certificate as ca_bundle in "
                    f"the provider config (verify_ssl: false only for a throw-away test host)"
                ) from exc
            except requests.exceptions.ReadTimeout as exc:
                # A request that changes something may have been acted on: never sent twice.
                if method != "get" or attempt == attempts:
                    raise PveApiError(
                        f"{method.upper()} /{path}: no answer from {self.url} within {self.timeout} s "
                        f"(tried {attempt} time(s)): check the PVE host's load and network, or raise `timeout` in "
                        f"the provider config"
                    ) from exc
                why = f"no answer within {self.timeout} s"
            except requests.exceptions.ConnectionError as exc:
                if attempt == attempts:
                    raise PveApiError(
                        f"{method.upper()} /{path}: cannot reach {self.url} ({exc.__class__.__name__}: {exc}) after "
                        f"{attempt} attempt(s): check the url in the provider config and the network"
                    ) from exc
                why = f"{exc.__class__.__name__}"
            self._pause(attempt, f"{method.upper()} /{path}", why)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path, **params):
        return self.request("get", path, **params)

    def wait_task(self, upid, what, timeout):
        """Wait for task ``upid`` to end; raise PveTaskError unless its exitstatus is OK."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            return  # a synchronous answer (older PVE): nothing to wait for
        node = upid.split(":")[1]
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self.get(f"nodes/{node}/tasks/{upid}/status")
            if status.get("status") == "stopped":
                exitstatus = str(status.get("exitstatus", ""))
                if exitstatus == "OK":
                    return
                if exitstatus.startswith("WARNINGS"):
                    log.warning("%s: the task ended with %s (%s)", what, exitstatus, upid)
                    return
                raise PveTaskError(f"{what}: the PVE task failed: {exitstatus}{self._log_tail(node, upid)}", upid,
                                   exitstatus=exitstatus)
            if time.monotonic() >= deadline:
                raise PveTaskError(
                    f"{what}: the PVE task did not end within {timeout} s ({upid}); raise task_timeout in the "
                    f"provider config if the storage is slow", upid, timed_out=True,
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)

    def run_task(self, method, path, what, within, **params):
        """Start a task and wait for it. A task that failed for a transient reason (a config lock it could
        not get in time, a lock another task holds, lost quorum) is started again, with backoff."""
        for attempt in range(1, self.retries + 2):
            upid = self.request(method, path, **params)
            try:
                self.wait_task(upid, what, within)
                return upid
            except PveTaskError as exc:
                if exc.timed_out or not exc.transient or attempt > self.retries:
                    raise
                self._pause(attempt, what, str(exc).splitlines()[0])
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_tail(self, node, upid, lines=8):
        try:
            entries = self.get(f"nodes/{node}/tasks/{upid}/log", start=0, limit=500) or []
        except SaltCloudSystemExit:
            return ""
        text = [e.get("t", "") for e in entries if e.get("t") and not e["t"].startswith("TASK ")]
        return ("\n  task log: " + "\n  task log: ".join(text[-lines:])) if text else ""

    def guests(self):
        """Every guest (not templates) the token may see: /cluster/resources entries."""
        return [r for r in self.get("cluster/resources", type="vm") or [] if r.get("type") in ("lxc", "qemu")]

    def node_states(self):
        """node -> online, offline or unknown, as PVE's /nodes says."""
        return {n["node"]: n.get("status", "unknown") for n in self.get("nodes") or []}


def _token_secret():
    """The token's secret: an sdb:// URI (Salt resolves it when it reads the config; resolved here otherwise)
    or the environment variable named by token_secret_env. sitectl refuses to render anything else."""
    provider = get_configured_provider()
    value = _value("token_secret", provider)
    if value is not None:
        if str(value).startswith("sdb://"):
            resolved = salt.utils.sdb.sdb_get(value, __opts__, __utils__)
            if not resolved or resolved == value:
                raise SaltCloudConfigError(f"token_secret: {value} gave no value: check the sdb profile and path")
            value = resolved
        return str(value)
    env = _value("token_secret_env", provider) or "PVE_TOKEN_SECRET"
    value = os.environ.get(env)
    if not value:
        raise SaltCloudConfigError(
            f"the Proxmox API token secret is not set: export {env}=<the token's secret> before running salt-cloud "
            f"(or set token_secret: sdb://... in the provider config)"
        )
    return value


def _api(settings):
    verify = settings["verify_ssl"]
    if settings["ca_bundle"] and verify:
        if not os.path.isfile(settings["ca_bundle"]):
            raise SaltCloudConfigError(f"ca_bundle: {settings['ca_bundle']} does not exist")
        verify = settings["ca_bundle"]
    provider = get_configured_provider()
    return Api(
        _as_text("url", _value("url", provider)), _as_text("token_id", _value("token_id", provider)),
        _token_secret(), verify, timeout=settings["timeout"], retries=settings["retries"], backoff=settings["backoff"],
    )


# -- the site --------------------------------------------------------------------------------------


def _site_guest(name):
    from sitectl.cloud import site_guest

    return site_guest(__opts__, name)


def _fire(name, what, tag_suffix, vm_):
    from sitectl.cloud import fire

    fire(__utils__, __opts__, name, what, tag_suffix, vm_)


def _node_of(guest, settings):
    node = guest.get("node") or settings["node"]
    if not node:
        raise SaltCloudConfigError(f"{guest['name']}: no Proxmox node: set site.proxmox.node or the guest's node")
    return node


def _description(site, guest, vmid, run):
    return (f"salt-platform guest {guest['name']} of site {site['name']}, made and managed by salt-cloud; "
            f"keep the next line, salt-cloud destroys only a guest that has it\n"
            f"salt-platform: site={site['name']} guest={guest['name']} vmid={vmid} run={run}")


def _tags(guest):
    return ";".join(sorted({MARK_TAG, *guest.get("tags", [])}))


def _mark_of(cfg):
    found = _MARK.search(str(cfg.get("description") or ""))
    return found.groupdict() if found else None


def _ownership_problems(entry, cfg, guest, site, node):
    """Why the PVE guest ``entry`` (with config ``cfg``) is not provably the site's guest; [] if it is."""
    name, vmid = guest["name"], int(entry["vmid"])
    problems = []
    if entry.get("name") != name:
        problems.append(f"name: PVE calls VMID {vmid} {entry.get('name')!r}, the site's guest is {name!r}")
    if guest.get("vmid") is not None and int(guest["vmid"]) != vmid:
        problems.append(f"VMID: PVE has {name!r} as VMID {vmid}, the site says {guest['vmid']}")
    if entry.get("node") != node:
        problems.append(f"node: PVE has VMID {vmid} on {entry.get('node')}, the site says {node}")
    mark = _mark_of(cfg)
    if mark is None:
        problems.append(f"mark: the description of VMID {vmid} has no 'salt-platform: site=... guest=...' line, so "
                        f"salt-cloud did not make it")
    elif (mark["site"], mark["guest"], int(mark["vmid"])) != (site["name"], name, vmid):
        problems.append(f"mark: it says site={mark['site']} guest={mark['guest']} vmid={mark['vmid']}, expected "
                        f"site={site['name']} guest={name} vmid={vmid}")
    return problems


def _owned(api, name, settings):
    """(entry, config) of the site's guest ``name`` in PVE, or an error that says which of name, VMID,
    node and mark differ. Nothing is changed on the way."""
    guest, site = _site_guest(name)
    node = _node_of(guest, settings)
    entry = _one(api, name)
    cfg = _config(api, entry)
    problems = _ownership_problems(entry, cfg, guest, site, node)
    if problems:
        raise SaltCloudSystemExit(
            f"{name}: refused: VMID {entry['vmid']} on {entry.get('node')} is not provably the site's guest {name}; "
            f"nothing was stopped or changed.\n  - " + "\n  - ".join(problems)
        )
    return entry, cfg


def _ssh_keys(settings, site):
    keys = []
    pub = settings["ssh_public_key"]
    if pub:
        if not os.path.isfile(pub):
            raise SaltCloudConfigError(f"ssh_public_key: {pub} does not exist")
        with open(pub, encoding="utf-8") as fh:
            keys.append(fh.read().strip())
    for admin in sorted((site.get("admins") or {}).values(), key=str):
        keys.extend(admin.get("ssh_keys", []))
    return "\n".join(keys) + "\n" if keys else None


def _lxc_params(settings, guest, site, vmid, run):
    storage = settings["storage"] or "local-lvm"
    gateway = site["network"]["gateway"]
    bridge = settings["bridge"] or site["network"].get("bridge") or "vmbr0"
    ip = f"ip={guest['address']},gw={gateway}" if settings["ip"] == "static" else "ip=dhcp"
    params = {
        "vmid": vmid,
        "ostemplate": settings["image"],
        "hostname": guest["name"],
        "cores": guest["cores"],
        "memory": guest["memory"],
        "swap": settings["swap"],
        "rootfs": f"{storage}:{guest['disk']}",
        "net0": f"name=eth0,bridge={bridge},{ip},type=veth",
        "unprivileged": int(settings["unprivileged"]),
        "onboot": int(settings["onboot"]),
        "searchdomain": site["domain"],
        "description": _description(site, guest, vmid, run),
        "tags": _tags(guest),
        "start": 0,
    }
    nameservers = site["network"].get("nameservers") or [gateway]
    params["nameserver"] = " ".join(nameservers)
    params.update(_mount_points(guest, storage))
    if settings["features"]:
        params["features"] = settings["features"]
    keys = _ssh_keys(settings, site)
    if keys:
        params["ssh-public-keys"] = keys
    return params


def _mount_points(guest, storage):
    """The site's mounts as PVE's ``mpN`` (a new volume of SIZE GiB on the storage, mounted at the path;
    ``backup`` says whether vzdump includes it: PVE leaves a mount point out unless told)."""
    return {f"mp{n}": (f"{mount.get('storage') or storage}:{mount['size']},mp={mount['path']},"
                       f"backup={int(mount.get('backup', True))}")
            for n, mount in enumerate(guest.get("mounts") or [])}


def _vm_config(settings, guest, site):
    gateway = site["network"]["gateway"]
    params = {
        "cores": guest["cores"],
        "memory": guest["memory"],
        "ciuser": settings["ciuser"],
        "ipconfig0": f"ip={guest['address']},gw={gateway}" if settings["ip"] == "static" else "ip=dhcp",
        "nameserver": " ".join(site["network"].get("nameservers") or [gateway]),
        "searchdomain": site["domain"],
        "onboot": int(settings["onboot"]),
        "agent": f"enabled={int(settings['agent'])}",
        "tags": _tags(guest),
    }
    keys = _ssh_keys(settings, site)
    if keys:
        # PVE wants the keys URL-encoded (spaces as %20), the form encoding comes on top.
        params["sshkeys"] = urllib.parse.quote(keys, safe="")
    return params


def _template_vmid(api, clone_from, guests=None):
    """(node, vmid) of the QEMU template ``clone_from`` (a VMID or a unique template name)."""
    entries = [r for r in (guests or api.guests()) if r.get("type") == "qemu"]
    if str(clone_from).isdigit():
        found = [r for r in entries if r["vmid"] == int(clone_from)]
    else:
        found = [r for r in entries if r.get("name") == clone_from and r.get("template")]
    if not found:
        raise SaltCloudSystemExit(
            f"clone_from: no QEMU template {clone_from!r} on the cluster: make one (docs/proxmox.md, 'the VM "
            f"template') or set clone_from to its VMID"
        )
    if len(found) > 1:
        ids = ", ".join(str(r["vmid"]) for r in found)
        raise SaltCloudSystemExit(f"clone_from: {clone_from!r} names {len(found)} templates (VMIDs {ids}): "
                                  f"give the VMID instead")
    return found[0]["node"], found[0]["vmid"]


def _disk_gib(config_value):
    match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", str(config_value or ""))
    if not match:
        return 0.0
    factor = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024 ** 3}[match.group(2)]
    return float(match.group(1)) * factor


def _one(api, name, guests=None):
    """The single guest called ``name``; two guests with that name is an error, not a guess."""
    found = [r for r in (guests if guests is not None else api.guests())
             if r.get("name") == name and not r.get("template")]
    if not found:
        raise SaltCloudNotFound(f"no guest named {name!r} on {api.url}")
    if len(found) > 1:
        where = ", ".join(f"VMID {r['vmid']} on {r['node']}" for r in found)
        raise SaltCloudSystemExit(
            f"{name!r} matches {len(found)} guests ({where}); salt-cloud will not guess which one is meant: "
            f"rename or remove the extra guests in PVE, so that each name is unique"
        )
    return found[0]


# -- IP addresses ----------------------------------------------------------------------------------


def _addresses_lxc(entries):
    out = []
    for iface in entries or []:
        if iface.get("name") == "lo":
            continue
        for addr in iface.get("ip-addresses") or []:
            if addr.get("ip-address-type") == "inet":
                out.append(addr["ip-address"])
        if not iface.get("ip-addresses") and iface.get("inet"):
            out.append(iface["inet"].split("/")[0])
    return out


def _addresses_agent(answer):
    result = answer.get("result", answer) if isinstance(answer, dict) else answer
    out = []
    for iface in result or []:
        if iface.get("name") == "lo":
            continue
        for addr in iface.get("ip-addresses") or []:
            if addr.get("ip-address-type") == "ipv4" and not addr["ip-address"].startswith("127."):
                out.append(addr["ip-address"])
    return out


def _reported_ips(api, kind, node, vmid):
    """The addresses the guest reports now (LXC /interfaces, QEMU guest agent); [] if none yet."""
    try:
        if kind == "lxc":
            return _addresses_lxc(api.request("get", f"nodes/{node}/lxc/{vmid}/interfaces", retry=False))
        return _addresses_agent(
            api.request("get", f"nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", retry=False)
        )
    except PveApiError as exc:
        if exc.status in (401, 403):
            raise
        log.debug("no address reported yet by %s %s: %s", kind, vmid, exc)
        return []


def _find_ip(api, settings, kind, node, vmid, guest):
    """The guest's address: reported by the guest (bounded wait), or the static one of the site."""
    static = guest["ip"] if settings["ip"] == "static" else None
    wait = kind == "qemu" and settings["agent"] or not static
    if not wait:
        return static, "static"
    timeout = settings["ip_timeout"]
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        ips = _reported_ips(api, kind, node, vmid)
        if ips:
            chosen = static if static in ips else ips[0]
            return chosen, "guest agent" if kind == "qemu" else "interfaces"
        if time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 3.0)
    if static:
        log.warning("%s: the guest reported no address within %s s; using the static address %s",
                    guest["name"], timeout, static)
        return static, "static"
    source = "the QEMU guest agent" if kind == "qemu" else "the container's interfaces"
    raise SaltCloudSystemExit(
        f"{guest['name']}: no IPv4 address from {source} within {timeout:g} s (DHCP): check the bridge's DHCP "
        f"server{' and that qemu-guest-agent runs in the template' if kind == 'qemu' else ''}, or raise ip_timeout"
    )




# -- create ----------------------------------------------------------------------------------------


class _NameLock:
    """One create of a name at a time on this master: a second run waits, then finds the guest and says so.
    (PVE keeps VMIDs unique, not names; a VMID from /cluster/nextid would let two runs make two guests.)"""

    def __init__(self, name):
        folder = os.path.join(__opts__["cachedir"], "proxmox_platform")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"create-{name}.lock")
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _free_vmid(api, reserved):
    """A VMID no guest has and the site gives no other guest: /cluster/nextid, then asked for one by one."""
    candidate = int(api.get("cluster/nextid"))
    for _ in range(1000):
        while candidate in reserved:
            candidate += 1
        try:
            return int(api.get("cluster/nextid", vmid=candidate))
        except PveApiError as exc:
            if not _ALREADY_EXISTS.search(exc.pve_text):
                raise
            candidate += 1
    raise SaltCloudSystemExit("no free VMID found in 1000 tries after /cluster/nextid")


def _exists_message(name, same_name):
    where = ", ".join(f"VMID {r['vmid']} on {r['node']}" for r in same_name)
    return (f"{name}: exists: PVE already has a guest of this name ({where}); nothing was created and it was left "
            f"alone. Remove it first (salt-cloud -d {name}, if it is the site's) or leave {name} out of the map")


def create(vm_):
    """Create, start and seed one guest of the site; fire the events salt-cloud drivers fire."""
    name = vm_["name"]
    guest, site = _site_guest(name)
    settings = _settings(vm_)
    kind = "lxc" if guest["kind"] == "lxc" else "qemu"
    if kind == "lxc" and not settings["image"]:
        raise SaltCloudSystemExit(f"{name}: profile {vm_.get('profile')!r} has no `image` (an LXC OS template), but "
                                  f"the site makes {name} a container; use the profile {guest['profile']!r}")
    if kind == "qemu" and not settings["clone_from"]:
        raise SaltCloudSystemExit(f"{name}: profile {vm_.get('profile')!r} has no `clone_from`, but the site makes "
                                  f"{name} a VM; use the profile {guest['profile']!r}")
    node = _node_of(guest, settings)
    api = _api(settings)
    _fire(name, "starting create", "creating", vm_)
    with _NameLock(name):
        return _create(vm_, api, settings, guest, site, kind, node)


def _create(vm_, api, settings, guest, site, kind, node):
    name = guest["name"]
    task_timeout = settings["task_timeout"]
    run = secrets.token_hex(6)
    guests = api.guests()
    same_name = [r for r in guests if r.get("name") == name]
    if same_name:
        raise SaltCloudSystemExit(_exists_message(name, same_name))
    source_node, source = _template_vmid(api, settings["clone_from"], guests) if kind == "qemu" else (None, None)

    made = {"upid": None, "vmid": guest.get("vmid"), "key": False}
    try:
        _fire(name, "requesting instance", "requesting", vm_)
        made["upid"] = _claim_vmid(api, settings, guest, site, kind, node, run, guests, made,
                                   (source_node, source) if kind == "qemu" else (None, None))
        vmid = made["vmid"]
        what = f"{name}: creating container {vmid} on {node}" if kind == "lxc" else \
            f"{name}: cloning VM {source} to {vmid} on {node}"
        api.wait_task(made["upid"], what, task_timeout)
        _accept_key(vm_, name)
        made["key"] = True
        if kind == "qemu":
            _configure_vm(api, settings, guest, site, node, vmid, task_timeout)
        api.run_task("post", f"nodes/{node}/{kind}/{vmid}/status/start", f"{name}: starting {kind} {vmid}",
                     task_timeout)
        ip, source_of_ip = _find_ip(api, settings, kind, node, vmid, guest)
        if settings["bootstrap"] == "official":
            _bootstrap(vm_, guest, ip)
        if guest.get("protection"):
            # Last: a half-made guest stays removable by the cleanup below.
            api.request("put", f"nodes/{node}/{kind}/{vmid}/config", protection=1)
    except Exception as exc:
        timeout = max(task_timeout, settings["cleanup_timeout"])
        remains = _undo(api, name, node, kind, made, run, timeout, exc)
        if made["key"]:
            salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
            remains += " The minion key this run accepted was removed."
        text = str(exc) if isinstance(exc, (SaltCloudSystemExit, SaltCloudConfigError)) else \
            f"{exc.__class__.__name__}: {exc}"
        raise SaltCloudSystemExit(f"{text}\n{remains}") from exc

    _fire(name, "created instance", "created", vm_)
    data = _show(api, _one(api, name))
    data.update({"ip_source": source_of_ip, "bootstrap": settings["bootstrap"], "api_calls": api.calls})
    if ip not in data["private_ips"]:
        data["private_ips"].insert(0, ip)
    return data


def _claim_vmid(api, settings, guest, site, kind, node, run, guests, made, source):
    """Send the create with the site's VMID, or one from /cluster/nextid (not one the site gives another
    guest); on PVE's "already exists" for an allocated VMID, ask again. Records the VMID in ``made``;
    returns the create's UPID. A VMID held by a guest that is not this run's is left alone."""
    name = guest["name"]
    reserved = {int(g["vmid"]) for n, g in site["guests"].items() if n != name and g.get("vmid") is not None}
    # Each "already exists" means another create took the VMID first: in a -P map, at most every other
    # guest of the site can, so that many tries (and the retries for strangers) always suffice there.
    for _ in range(len(site["guests"]) + settings["retries"] + 1):
        vmid = guest.get("vmid") or _free_vmid(api, reserved)
        made["vmid"] = vmid
        holder = [r for r in guests if int(r["vmid"]) == int(vmid)]
        if holder:
            raise SaltCloudSystemExit(
                f"{name}: VMID {vmid} is already used by {holder[0].get('name')!r} ({holder[0]['type']} on "
                f"{holder[0]['node']}); it was left alone and nothing was created. Give "
                f"site.guests.{name}.vmid a free VMID (or remove the other guest)"
            )
        try:
            return _start_create(api, settings, guest, site, kind, node, vmid, run, *source)
        except PveApiError as exc:
            if not _ALREADY_EXISTS.search(exc.pve_text):
                raise
            if guest.get("vmid") is not None:
                raise SaltCloudSystemExit(
                    f"{name}: VMID {vmid} was taken by another guest between the check and the create (PVE: "
                    f"{exc.pve_text}); that guest is not this run's and was left alone, nothing was created"
                ) from exc
            log.warning("%s: VMID %s was taken meanwhile (%s); asking for another", name, vmid, exc.pve_text)
    raise SaltCloudSystemExit(f"{name}: every VMID /cluster/nextid gave was taken before the create reached "
                              f"PVE; nothing was created")


def _start_create(api, settings, guest, site, kind, node, vmid, run, source_node, source):
    """Send the create (LXC) or clone (QEMU) of VMID ``vmid``; its UPID. A transient failure of the request
    is retried by the API client; "already exists" is the caller's."""
    if kind == "lxc":
        return api.request("post", f"nodes/{node}/lxc", **_lxc_params(settings, guest, site, vmid, run))
    clone = {"newid": vmid, "name": guest["name"], "full": int(settings["full_clone"]),
             "description": _description(site, guest, vmid, run)}
    if settings["full_clone"] and settings["storage"]:
        clone["storage"] = settings["storage"]
    if node != source_node:
        clone["target"] = node
    return api.request("post", f"nodes/{source_node}/qemu/{source}/clone", **clone)


def _configure_vm(api, settings, guest, site, node, vmid, task_timeout):
    name = guest["name"]
    api.run_task("post", f"nodes/{node}/qemu/{vmid}/config", f"{name}: configuring VM {vmid} (cloud-init)",
                 task_timeout, **_vm_config(settings, guest, site))
    disk = settings["disk_key"]
    current = api.get(f"nodes/{node}/qemu/{vmid}/config")
    if disk not in current:
        raise SaltCloudSystemExit(f"{name}: the template has no disk {disk!r} to grow; set disk_key in the "
                                  f"profile to the template's boot disk")
    if _disk_gib(current.get(disk)) < guest["disk"]:
        api.run_task("put", f"nodes/{node}/qemu/{vmid}/resize",
                     f"{name}: growing {disk} of VM {vmid} to {guest['disk']} GiB", task_timeout,
                     disk=disk, size=f"{guest['disk']}G")


def _accept_key(vm_, name):
    """Make the minion's key pair and accept it: only once the guest exists and is this run's."""
    pub, priv = vm_.get("pub_key"), vm_.get("priv_key")
    if not (pub and priv):
        priv, pub = salt.utils.cloud.gen_keys(config.get_cloud_config_value("keysize", vm_, __opts__, default=2048))
        vm_["priv_key"], vm_["pub_key"] = priv, pub
    salt.utils.cloud.accept_key(__opts__["pki_dir"], pub, name)


def _bootstrap(vm_, guest, ip):
    """Salt's official bootstrap over SSH with the pre-seeded (already accepted) key pair."""
    vm_.update(ssh_host=ip, deploy=True, salt_host=ip)
    minion = dict(_value("minion", vm_) or {})
    minion.update(guest["minion"], id=guest["name"], master=guest["master"])
    vm_["minion"] = minion
    ret = __utils__["cloud.bootstrap"](vm_, __opts__)
    if isinstance(ret, dict) and ret.get("Error"):
        raise SaltCloudSystemExit(f"{guest['name']}: installing Salt over SSH failed: {ret['Error']}")


def _undo(api, name, node, kind, made, run, timeout, cause):
    """Remove what this run made after a failed create, and only that; return the sentence saying what is left."""
    vmid = made["vmid"]
    if made["upid"] is None:
        return "Nothing was created in PVE by this run."
    try:
        if getattr(cause, "timed_out", False) and getattr(cause, "upid", None):
            _end_task(api, cause.upid, timeout)
        present = [r for r in api.guests() if int(r["vmid"]) == int(vmid)]
        if not present:
            return f"PVE holds no guest {vmid} (nothing remains)."
        entry = present[0]
        mark = _mark_of(_config(api, entry))
        if not mark or mark["run"] != run:
            return (f"REMAINS: VMID {vmid} ({entry.get('name')!r} on {entry['node']}) does not carry this run's "
                    f"mark (run={run}), so it was left alone: check it in PVE and remove it there if it is a "
                    f"leftover of this run.")
        _remove(api, entry["node"], entry["type"], vmid, timeout)
        return f"The half-created guest {name} (VMID {vmid} on {entry['node']}) was stopped and destroyed."
    except Exception as exc:  # noqa: BLE001 - the report must say what remains, whatever happened
        log.error("removing %s (VMID %s) failed: %s", name, vmid, exc)
        return (
            f"REMAINS: guest {name} (VMID {vmid}, {kind} on node {node}) could not be removed ({exc}); remove it "
            f"with `salt-cloud -d {name}` or in PVE (`pct destroy {vmid}` / `qm destroy {vmid}`)."
        )


def _end_task(api, upid, timeout):
    """Stop a task of this run that ran out of time, and wait until it has ended."""
    node = upid.split(":")[1]
    try:
        api.request("delete", f"nodes/{node}/tasks/{upid}")
    except PveApiError as exc:
        log.warning("could not stop task %s: %s", upid, exc)
    try:
        api.wait_task(upid, f"waiting for the earlier task {upid} to end", timeout)
    except PveTaskError as exc:
        if exc.timed_out:
            raise


def _remove(api, node, kind, vmid, task_timeout):
    """Stop (and wait), then destroy (and wait) one guest already proven to be this site's."""
    base = f"nodes/{node}/{kind}/{vmid}"
    if api.get(f"{base}/status/current").get("status") == "running":
        api.run_task("post", f"{base}/status/stop", f"stopping {kind} {vmid}", task_timeout)
    api.run_task("delete", base, f"destroying {kind} {vmid}", task_timeout, purge=1,
                 **{"destroy-unreferenced-disks": 1})


# -- destroy and power actions ---------------------------------------------------------------------


def _protected(cfg):
    return str(cfg.get("protection", 0)).strip().lower() in ("1", "true")


def destroy(name, call=None):
    """Destroy the site's guest ``name`` once name, VMID, node and mark agree and it is not protected:
    shut it down (forced after shutdown_timeout), wait, destroy it, remove its minion key."""
    if call == "function":
        raise SaltCloudSystemExit("The destroy action must be called with -d, --destroy, -a or --action.")
    settings = _settings()
    api = _api(settings)
    entry, cfg = _owned(api, name, settings)
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    if _protected(cfg):
        raise SaltCloudSystemExit(
            f"{name}: refused: VMID {vmid} on {node} is protected (protection=1 in PVE); nothing was stopped or "
            f"changed. To destroy it, set site.guests.{name}.protection to false and clear it in PVE "
            f"(`{'pct' if kind == 'lxc' else 'qm'} set {vmid} --protection 0`), then run salt-cloud -d {name} again"
        )
    task_timeout = settings["task_timeout"]
    _fire(name, "destroying instance", "destroying", {"name": name})
    base = f"nodes/{node}/{kind}/{vmid}"
    if api.get(f"{base}/status/current").get("status") == "running":
        timeout = settings["shutdown_timeout"]
        api.run_task("post", f"{base}/status/shutdown", f"{name}: shutting down {kind} {vmid}",
                     timeout + task_timeout, timeout=timeout, forceStop=1)
    _remove(api, node, kind, vmid, task_timeout)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
    _fire(name, "destroyed instance", "destroyed", {"name": name})
    return {name: {"destroyed": True, "vmid": vmid, "node": node}}


def _job_differences(current, wanted):
    """The keys of ``wanted`` whose value PVE holds otherwise (its GET gives prune-backups as a mapping and
    flags as integers)."""
    def norm(key, value):
        if key == "prune-backups" and isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        if key == "prune-backups":
            return ",".join(sorted(str(value).split(",")))
        if key == "vmid":
            return ",".join(sorted(str(value).split(","), key=lambda v: int(v) if v.isdigit() else 0))
        return str(int(value)) if isinstance(value, bool) else str(value)

    return sorted(k for k, v in wanted.items() if norm(k, current.get(k)) != norm(k, v))


def backup_schedule(kwargs=None, call=None):
    """``salt-cloud -f backup_schedule <provider>``: Proxmox's own backup (vzdump) of every guest of the
    site that exists at the provider, as one job on /cluster/backup with the id ``platform-<site>`` and
    the schedule, storage, mode, compression and retention of ``site.backup.vzdump``: created when
    absent, updated when it differs, untouched when it matches. Run it again after guests are added."""
    if call != "function":
        raise SaltCloudSystemExit("The backup_schedule function must be called with -f or --function.")
    from sitectl.cloud import site_of, vzdump_job

    site = site_of(__opts__)
    job_id = f"platform-{site['name']}"
    if not (site.get("backup") or {}).get("vzdump"):
        return {"id": job_id, "result": "absent", "comment": "site.backup.vzdump is not set: no job declared"}
    api = _api(_settings())
    at_provider = {e.get("name"): e["vmid"] for e in api.guests()}
    # A guest the site gives a VMID counts only under that VMID (a namesake is not the site's).
    found = {n: at_provider[n] for n, g in site["guests"].items()
             if n in at_provider and g.get("vmid", at_provider[n]) == at_provider[n]}
    missing = sorted(set(site["guests"]) - set(found))
    vmids = list(found.values())
    if not vmids:
        return {"id": job_id, "result": "absent", "comment": "no guest of the site exists at the provider yet"}
    wanted = vzdump_job(site, vmids)
    jobs = {j.get("id"): j for j in api.get("cluster/backup") or []}
    if job_id not in jobs:
        api.request("post", "cluster/backup", retry=False, id=job_id, **wanted)
        result, changed = "created", sorted(wanted)
    else:
        changed = _job_differences(api.get(f"cluster/backup/{job_id}"), wanted)
        if changed:
            api.request("put", f"cluster/backup/{job_id}", retry=False, **{k: wanted[k] for k in changed})
        result = "updated" if changed else "unchanged"
    return {"id": job_id, "result": result, "changed": changed, "vmids": sorted(vmids),
            "not_yet_created": missing}


def _power(name, action, call):
    if call != "action":
        raise SaltCloudSystemExit(f"The {action} action must be called with -a or --action.")
    settings = _settings()
    api = _api(settings)
    entry, _cfg = _owned(api, name, settings)
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    base = f"nodes/{node}/{kind}/{vmid}"
    before = api.get(f"{base}/status/current").get("status")
    if action in ("start", "stop", "shutdown") and before == _POWER[action]:
        return {"action": action, "state": before, "changed": False, "vmid": vmid, "node": node}
    if action == "reboot" and before != "running":
        raise SaltCloudSystemExit(f"{name}: not rebooted: VMID {vmid} is {before}; start it with -a start")
    params = {}
    timeout = settings["task_timeout"]
    if action == "shutdown":
        params = {"timeout": settings["shutdown_timeout"], "forceStop": 0}
        timeout += settings["shutdown_timeout"]
    elif action == "reboot":
        params = {"timeout": settings["shutdown_timeout"]}
        timeout += settings["shutdown_timeout"]
    api.run_task("post", f"{base}/status/{action}", f"{name}: {action} {kind} {vmid}", timeout, **params)
    after = api.get(f"{base}/status/current").get("status")
    if after != _POWER[action]:
        raise SaltCloudSystemExit(f"{name}: the {action} task of VMID {vmid} ended OK but the guest is {after}")
    return {"action": action, "state": after, "changed": True, "vmid": vmid, "node": node}


def start(name, call=None):
    """salt-cloud -a start NAME: start the site's guest and wait for the task."""
    return _power(name, "start", call)


def stop(name, call=None):
    """salt-cloud -a stop NAME: stop (hard) the site's guest and wait for the task."""
    return _power(name, "stop", call)


def shutdown(name, call=None):
    """salt-cloud -a shutdown NAME: shut the site's guest down cleanly within shutdown_timeout and wait."""
    return _power(name, "shutdown", call)


def reboot(name, call=None):
    """salt-cloud -a reboot NAME: reboot the site's guest and wait for the task."""
    return _power(name, "reboot", call)


# -- queries ---------------------------------------------------------------------------------------


def _config_ips(kind, cfg):
    key = "net0" if kind == "lxc" else "ipconfig0"
    match = re.search(r"(?:^|,)ip=([0-9.]+)/", str(cfg.get(key, "")))
    return [match.group(1)] if match else []


def _node(entry, ips=None):
    ips = ips or []
    return {
        "id": entry["vmid"],
        "name": entry.get("name"),
        "state": entry.get("status", "unknown"),
        "private_ips": [ip for ip in ips if ipaddress.ip_address(ip).is_private],
        "public_ips": [ip for ip in ips if not ipaddress.ip_address(ip).is_private],
        "image": entry["type"],
        "size": f"{entry.get('maxcpu', '-')} cores, {int(entry.get('maxmem', 0)) // 1048576} MiB",
    }


def _keys(entries):
    """list_nodes keys: the name; a second guest of the same name is listed as 'name (VMID n)', and an
    action on the name reaches the driver, which refuses to pick one of them."""
    seen, out = set(), []
    for entry in entries:
        name = entry.get("name") or f"vmid-{entry['vmid']}"
        out.append(f"{name} (VMID {entry['vmid']})" if name in seen else name)
        seen.add(name)
    return out


def _node_trouble(api, node, exc=None):
    """'node X is offline' (or unknown, or not a node of the cluster), with PVE's answer; for an error text."""
    try:
        state = api.node_states().get(node, "not a node of this cluster")
    except PveApiError as lookup:
        state = f"unknown (GET /nodes failed: {lookup})"
    why = f" ({exc.status}: {exc.pve_text})" if isinstance(exc, PveApiError) and exc.pve_text else ""
    return f"node {node} is {state}{why}"


def _config(api, entry):
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    try:
        return api.get(f"nodes/{node}/{kind}/{vmid}/config")
    except PveApiError as exc:
        if exc.status in (595, 596) or entry.get("status") == "unknown":
            raise SaltCloudSystemExit(f"{entry.get('name')} (VMID {vmid}): {_node_trouble(api, node, exc)}: "
                                      f"{exc}") from exc
        raise


def _show(api, entry):
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    cfg = _config(api, entry)
    status = api.get(f"nodes/{node}/{kind}/{vmid}/status/current")
    ips = _config_ips(kind, cfg)
    if status.get("status") == "running":
        for ip in _reported_ips(api, kind, node, vmid):
            if ip not in ips:
                ips.append(ip)
    data = _node({**entry, **{k: status[k] for k in ("status", "maxmem") if k in status}}, ips)
    mark = _mark_of(cfg)
    data.update({"vmid": vmid, "node": node, "type": kind,
                 "managed_by": f"salt-platform site {mark['site']}" if mark else None,
                 "config": {k: v for k, v in cfg.items() if k not in ("sshkeys", "digest")}})
    return data


def _query_api():
    """The API client for a listing; a configuration error ends the listing loudly too."""
    try:
        return _api(_settings())
    except (SaltCloudConfigError, SaltCloudSystemExit) as exc:
        raise QueryFailed(f"proxmox_platform: {exc}") from exc


def _listing(describe, shape=None):
    """Every guest, described by ``describe(api, entry)`` (and the whole listing by ``shape``). A guest whose
    node is down, or that could not be described, is listed with state 'unknown' and the reason; then the
    listing is printed and the run fails."""
    api = _query_api()
    try:
        entries = [e for e in api.guests() if not e.get("template")]
        nodes = api.node_states()
    except PveApiError as exc:
        raise QueryFailed(f"proxmox_platform: listing the guests failed: {exc}") from exc
    out, problems = {}, []
    for key, entry in zip(_keys(entries), entries, strict=True):
        state = nodes.get(entry["node"], "not a node of this cluster")
        if state != "online":
            out[key] = {**_node(entry), "state": "unknown", "node": entry["node"],
                        "error": f"node {entry['node']} is {state}"}
            problems.append(f"node {entry['node']} is {state}")
            continue
        try:
            out[key] = describe(api, entry)
        except SaltCloudSystemExit as exc:
            out[key] = {**_node(entry), "state": "unknown", "node": entry["node"], "error": str(exc)}
            problems.append(f"{key}: {exc}")
    if shape is not None:
        out = shape(out)
    if problems:
        alias, _, driver = _active_provider().partition(":")
        salt.output.display_output({alias: {driver: out}}, __opts__.get("output"), opts=__opts__)
        # salt-cloud terminates this worker process on the error below: what is buffered would be lost.
        sys.stdout.flush()
        raise QueryFailed("proxmox_platform: the listing above is incomplete:\n  "
                          + "\n  ".join(dict.fromkeys(problems)))
    return out


def _active_provider():
    active = globals().get("__active_provider_name__")
    return getattr(active, "value", lambda: active)() or f"platform:{__virtualname__}"


def list_nodes_min(call=None):
    """What salt-cloud looks names up in for -p, -m, -a and -d: one call, every node (a down node's guests
    show as 'unknown'). An API that fails ends the run instead of looking like an empty cluster."""
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes_min function must be called with -f or --function.")
    api = _query_api()
    try:
        entries = [e for e in api.guests() if not e.get("template")]
    except PveApiError as exc:
        raise QueryFailed(f"proxmox_platform: listing the guests failed: {exc}") from exc
    return {key: {"id": e["vmid"], "state": e.get("status", "unknown"), "node": e["node"]}
            for key, e in zip(_keys(entries), entries, strict=True)}


def list_nodes(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes function must be called with -f or --function.")

    def describe(api, entry):
        return _node(entry, _config_ips(entry["type"], _config(api, entry)))

    return _listing(describe)


def list_nodes_full(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes_full function must be called with -f or --function.")
    return _listing(_show)


def list_nodes_select(call=None):
    def select(out):
        return salt.utils.cloud.list_nodes_select(out, __opts__["query.selection"], call)

    return _listing(_show, select)


def show_instance(name, call=None):
    if call != "action":
        raise SaltCloudSystemExit("The show_instance action must be called with -a or --action.")
    api = _api(_settings())
    return _show(api, _one(api, name))


def avail_images(call=None):
    """LXC OS templates on every storage of every node, and the QEMU templates (for clone_from)."""
    if call == "action":
        raise SaltCloudSystemExit("The avail_images function must be called with -f or --function.")
    api = _api(_settings())
    out = {}
    for node in api.get("nodes") or []:
        if node.get("status") != "online":
            continue
        for store in api.get(f"nodes/{node['node']}/storage", content="vztmpl") or []:
            for item in api.get(f"nodes/{node['node']}/storage/{store['storage']}/content", content="vztmpl") or []:
                out[item["volid"]] = {"kind": "lxc template (image)", "node": node["node"], "size": item.get("size")}
    for entry in api.guests():
        if entry.get("template") and entry["type"] == "qemu":
            out[entry.get("name") or str(entry["vmid"])] = {"kind": "qemu template (clone_from)",
                                                            "vmid": entry["vmid"], "node": entry["node"]}
    return out


def avail_locations(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The avail_locations function must be called with -f or --function.")
    api = _api(_settings())
    return {n["node"]: {"status": n.get("status"), "maxcpu": n.get("maxcpu"), "maxmem": n.get("maxmem")}
            for n in api.get("nodes") or []}


def avail_sizes(call=None):
    return {"site": {"description": "cores, memory and disk come from the site's guest description"}}
