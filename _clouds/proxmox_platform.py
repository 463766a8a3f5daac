"""
salt-cloud driver ``proxmox_platform``: the site's guests on Proxmox VE, through its API with proxmoxer.

What a guest is (VMID, node, cores, memory, disk, address) comes from the site: the master's own
pillar for that minion id, validated by the ``platform`` ext_pillar (``platform:guest``). The
profile says only how a guest is built: an LXC container from an OS template (``image``) or a QEMU
VM cloned from a template (``clone_from``, a name or a VMID) and configured with cloud-init.

Every PVE task the driver starts is awaited by its UPID and its ``exitstatus`` checked; a failed
task is reported with PVE's own text and the tail of the task log. Transient API errors (5xx,
connection errors, timeouts of reads) are retried with backoff, never a 4xx. Whatever fails after a
guest exists removes it again (stop, destroy, awaited) and its accepted minion key, or says exactly
which guest remains and how to remove it.

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

import ipaddress
import logging
import os
import re
import time
import urllib.parse

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

# PVE answers 500 for many errors that will not go away on a retry.
_PERMANENT_500 = re.compile(
    r"already exists|does not exist|already running|not running|protection mode|unable to|no such|"
    r"not allowed|invalid|cannot|can't|only root|permission|parameter verification",
    re.IGNORECASE,
)
_TRANSIENT_STATUS = {502, 503, 504, 595, 596, 599}


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


def _provider_value(key, default=None):
    return config.get_cloud_config_value(key, get_configured_provider(), __opts__, default=default,
                                         search_global=False)


def _value(key, vm_, default=None):
    """A profile value, else the provider's, else ``default``."""
    return config.get_cloud_config_value(key, vm_, __opts__, default=default, search_global=False)


# -- errors ----------------------------------------------------------------------------------------


class PveApiError(SaltCloudSystemExit):
    """An API request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status


class PveTaskError(SaltCloudSystemExit):
    """A PVE task ended with an exit status other than OK, or did not end in time."""

    def __init__(self, message, upid, timed_out=False):
        super().__init__(message)
        self.upid = upid
        self.timed_out = timed_out


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

    def request(self, method, path, retry=True, **params):
        """One API call; transient failures are retried ``retries`` times with exponential backoff."""
        attempts = self.retries + 1 if retry else 1
        for attempt in range(1, attempts + 1):
            self.calls += 1
            try:
                return getattr(self.pve(path), method)(**params)
            except ResourceException as exc:
                status, message = exc.status_code, _pve_message(exc)
                transient = status in _TRANSIENT_STATUS or (status == 500 and not _PERMANENT_500.search(message))
                if status == 401:
                    raise PveApiError(
                        f"PVE refused the API token {self.token_id!r} ({status}: {message}): check that the token "
                        f"exists, is not expired, and that the secret given to salt-cloud (token_secret_env or "
                        f"token_secret in the provider config) is the one PVE showed when the token was made",
                        status,
                    ) from exc
                if status == 403:
                    raise PveApiError(
                        f"{method.upper()} /{path}: PVE denied it ({status}: {message}): grant the token's role "
                        f"the privilege named there (docs/proxmox.md lists the role the driver needs)", status,
                    ) from exc
                if not transient or attempt == attempts:
                    raise PveApiError(f"{method.upper()} /{path}: PVE answered {status}: {message}", status) from exc
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
            delay = self.backoff * 2 ** (attempt - 1)
            log.warning("%s /%s failed (%s); retrying in %.1f s (%d/%d)", method.upper(), path, why, delay,
                        attempt, attempts - 1)
            time.sleep(delay)
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
                raise PveTaskError(f"{what}: the PVE task failed: {exitstatus}{self._log_tail(node, upid)}", upid)
            if time.monotonic() >= deadline:
                raise PveTaskError(
                    f"{what}: the PVE task did not end within {timeout} s ({upid}); raise task_timeout in the "
                    f"provider config if the storage is slow", upid, timed_out=True,
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)

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


def _token_secret():
    """The token's secret: an sdb:// URI (Salt resolves it when it reads the config; resolved here otherwise)
    or the environment variable named by token_secret_env. sitectl refuses to render anything else."""
    value = _provider_value("token_secret")
    if value is not None:
        if str(value).startswith("sdb://"):
            resolved = salt.utils.sdb.sdb_get(value, __opts__, __utils__)
            if not resolved or resolved == value:
                raise SaltCloudConfigError(f"token_secret: {value} gave no value: check the sdb profile and path")
            value = resolved
        return str(value)
    env = _provider_value("token_secret_env", "PVE_TOKEN_SECRET")
    value = os.environ.get(env)
    if not value:
        raise SaltCloudConfigError(
            f"the Proxmox API token secret is not set: export {env}=<the token's secret> before running salt-cloud "
            f"(or set token_secret: sdb://... in the provider config)"
        )
    return value


def _api():
    verify = _provider_value("verify_ssl", True)
    ca_bundle = _provider_value("ca_bundle")
    if ca_bundle and verify is not False:
        if not os.path.isfile(ca_bundle):
            raise SaltCloudConfigError(f"ca_bundle: {ca_bundle} does not exist")
        verify = ca_bundle
    return Api(
        _provider_value("url"), _provider_value("token_id"), _token_secret(), verify,
        timeout=float(_provider_value("timeout", 30)), retries=int(_provider_value("retries", 3)),
        backoff=float(_provider_value("backoff", 1.0)),
    )


# -- the site --------------------------------------------------------------------------------------


def _site_guest(name):
    from sitectl.cloud import site_guest

    return site_guest(__opts__, name)


def _fire(name, what, tag_suffix, vm_):
    from sitectl.cloud import fire

    fire(__utils__, __opts__, name, what, tag_suffix, vm_)


def _bool(value):
    return 1 if value in (True, 1, "1", "true", "yes") else 0


def _ssh_keys(vm_, site):
    keys = []
    pub = _value("ssh_public_key", vm_)
    if pub:
        if not os.path.isfile(pub):
            raise SaltCloudConfigError(f"ssh_public_key: {pub} does not exist")
        with open(pub, encoding="utf-8") as fh:
            keys.append(fh.read().strip())
    for admin in sorted((site.get("admins") or {}).values(), key=str):
        keys.extend(admin.get("ssh_keys", []))
    return "\n".join(keys) + "\n" if keys else None


def _static(vm_):
    return str(_value("ip", vm_, "static")).lower() != "dhcp"


def _lxc_params(vm_, guest, site, vmid):
    storage = _value("storage", vm_, "local-lvm")
    gateway = site["network"]["gateway"]
    bridge = _value("bridge", vm_) or site["network"].get("bridge") or "vmbr0"
    ip = f"ip={guest['address']},gw={gateway}" if _static(vm_) else "ip=dhcp"
    params = {
        "vmid": vmid,
        "ostemplate": _value("image", vm_),
        "hostname": guest["name"],
        "cores": guest["cores"],
        "memory": guest["memory"],
        "swap": int(_value("swap", vm_, 512)),
        "rootfs": f"{storage}:{guest['disk']}",
        "net0": f"name=eth0,bridge={bridge},{ip},type=veth",
        "unprivileged": _bool(_value("unprivileged", vm_, True)),
        "onboot": _bool(_value("onboot", vm_, True)),
        "searchdomain": site["domain"],
        "description": f"salt-platform guest {guest['name']} (site {site['name']}); managed by salt-cloud",
        "start": 0,
    }
    nameservers = site["network"].get("nameservers") or [gateway]
    params["nameserver"] = " ".join(nameservers)
    features = _value("features", vm_)
    if features:
        params["features"] = features
    keys = _ssh_keys(vm_, site)
    if keys:
        params["ssh-public-keys"] = keys
    return params


def _vm_config(vm_, guest, site):
    gateway = site["network"]["gateway"]
    params = {
        "cores": guest["cores"],
        "memory": guest["memory"],
        "ciuser": _value("ciuser", vm_, "platform"),
        "ipconfig0": f"ip={guest['address']},gw={gateway}" if _static(vm_) else "ip=dhcp",
        "nameserver": " ".join(site["network"].get("nameservers") or [gateway]),
        "searchdomain": site["domain"],
        "onboot": _bool(_value("onboot", vm_, True)),
        "agent": f"enabled={_bool(_value('agent', vm_, True))}",
        "description": f"salt-platform guest {guest['name']} (site {site['name']}); managed by salt-cloud",
    }
    keys = _ssh_keys(vm_, site)
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


def _find_ip(api, vm_, kind, node, vmid, guest):
    """The guest's address: reported by the guest (bounded wait), or the static one of the site."""
    static = guest["ip"] if _static(vm_) else None
    wait = kind == "qemu" and _bool(_value("agent", vm_, True)) or not static
    if not wait:
        return static, "static"
    timeout = float(_value("ip_timeout", vm_, 120))
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


def create(vm_):
    """Create, start and seed one guest of the site; fire the events salt-cloud drivers fire."""
    name = vm_["name"]
    guest, site = _site_guest(name)
    kind = "lxc" if guest["kind"] == "lxc" else "qemu"
    if kind == "lxc" and not _value("image", vm_):
        raise SaltCloudSystemExit(f"{name}: profile {vm_.get('profile')!r} has no `image` (an LXC OS template), but "
                                  f"the site makes {name} a container; use the profile {guest['profile']!r}")
    if kind == "qemu" and not _value("clone_from", vm_):
        raise SaltCloudSystemExit(f"{name}: profile {vm_.get('profile')!r} has no `clone_from`, but the site makes "
                                  f"{name} a VM; use the profile {guest['profile']!r}")
    bootstrap = str(_value("bootstrap", vm_, "official"))
    if bootstrap not in ("official", "none"):
        raise SaltCloudConfigError(f"bootstrap: {bootstrap!r}; expected official or none")
    api = _api()
    node = guest.get("node") or _provider_value("node")
    if not node:
        raise SaltCloudConfigError(f"{name}: no Proxmox node: set site.proxmox.node or the guest's node")
    task_timeout = float(_provider_value("task_timeout", 600))

    _fire(name, "starting create", "creating", vm_)
    guests = api.guests()
    same_name = [r for r in guests if r.get("name") == name]
    if same_name:
        where = ", ".join(f"VMID {r['vmid']} on {r['node']}" for r in same_name)
        raise SaltCloudSystemExit(
            f"{name}: a guest with this name already exists in PVE ({where}); nothing was created. Remove it "
            f"first (salt-cloud -d {name}) or leave it out of the map"
        )
    vmid = guest.get("vmid")
    if vmid is None:
        vmid = int(api.get("cluster/nextid"))
    holder = [r for r in guests if r["vmid"] == int(vmid)]
    if holder:
        raise SaltCloudSystemExit(
            f"{name}: VMID {vmid} is already used by {holder[0].get('name')!r} ({holder[0]['type']} on "
            f"{holder[0]['node']}); nothing was created. Give site.guests.{name}.vmid a free VMID (or remove the "
            f"other guest)"
        )
    if kind == "qemu":
        source_node, source = _template_vmid(api, _value("clone_from", vm_), guests)

    # The key pair is made here and accepted only now that the guest will be created (the provider config
    # sets deploy: false, so salt-cloud itself never overwrites the key of a minion that exists already).
    pub, priv = vm_.get("pub_key"), vm_.get("priv_key")
    if not (pub and priv):
        priv, pub = salt.utils.cloud.gen_keys(config.get_cloud_config_value("keysize", vm_, __opts__, default=2048))
        vm_["priv_key"], vm_["pub_key"] = priv, pub
    salt.utils.cloud.accept_key(__opts__["pki_dir"], pub, name)

    attempted = False
    try:
        _fire(name, "requesting instance", "requesting", vm_)
        attempted = True
        if kind == "lxc":
            upid = api.request("post", f"nodes/{node}/lxc", **_lxc_params(vm_, guest, site, vmid))
            api.wait_task(upid, f"{name}: creating container {vmid} on {node}", task_timeout)
        else:
            clone = {"newid": vmid, "name": name, "full": _bool(_value("full_clone", vm_, True))}
            if clone["full"] and _value("storage", vm_):
                clone["storage"] = _value("storage", vm_)
            if node != source_node:
                clone["target"] = node
            upid = api.request("post", f"nodes/{source_node}/qemu/{source}/clone", **clone)
            api.wait_task(upid, f"{name}: cloning VM {source} to {vmid} on {node}", task_timeout)
            upid = api.request("post", f"nodes/{node}/qemu/{vmid}/config", **_vm_config(vm_, guest, site))
            api.wait_task(upid, f"{name}: configuring VM {vmid} (cloud-init)", task_timeout)
            disk = _value("disk_key", vm_, "scsi0")
            current = api.get(f"nodes/{node}/qemu/{vmid}/config")
            if disk not in current:
                raise SaltCloudSystemExit(f"{name}: the template has no disk {disk!r} to grow; set disk_key in the "
                                          f"profile to the template's boot disk")
            if _disk_gib(current.get(disk)) < guest["disk"]:
                upid = api.request("put", f"nodes/{node}/qemu/{vmid}/resize", disk=disk, size=f"{guest['disk']}G")
                api.wait_task(upid, f"{name}: growing {disk} of VM {vmid} to {guest['disk']} GiB", task_timeout)
        upid = api.request("post", f"nodes/{node}/{kind}/{vmid}/status/start")
        api.wait_task(upid, f"{name}: starting {kind} {vmid}", task_timeout)
        ip, source_of_ip = _find_ip(api, vm_, kind, node, vmid, guest)
        if bootstrap == "official":
            _bootstrap(vm_, guest, ip)
    except Exception as exc:
        cleanup_timeout = max(task_timeout, float(_provider_value("cleanup_timeout", 300)))
        remains = _undo(api, name, node, kind, vmid, attempted, cleanup_timeout, exc)
        salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
        if isinstance(exc, (SaltCloudSystemExit, SaltCloudConfigError)):
            text = str(exc)
        else:
            text = f"{exc.__class__.__name__}: {exc}"
        raise SaltCloudSystemExit(f"{text}\n{remains}") from exc

    _fire(name, "created instance", "created", vm_)
    data = _show(api, _one(api, name))
    data.update({"ip_source": source_of_ip, "bootstrap": bootstrap, "api_calls": api.calls})
    if ip not in data["private_ips"]:
        data["private_ips"].insert(0, ip)
    return data


def _bootstrap(vm_, guest, ip):
    """Salt's official bootstrap over SSH with the pre-seeded (already accepted) key pair."""
    vm_.update(ssh_host=ip, deploy=True, salt_host=ip)
    minion = dict(_value("minion", vm_, {}) or {})
    minion.update(id=guest["name"], master=guest["master"], hash_type="sha256")
    vm_["minion"] = minion
    ret = __utils__["cloud.bootstrap"](vm_, __opts__)
    if isinstance(ret, dict) and ret.get("Error"):
        raise SaltCloudSystemExit(f"{guest['name']}: installing Salt over SSH failed: {ret['Error']}")


def _undo(api, name, node, kind, vmid, attempted, task_timeout, cause):
    """Remove what a failed create made; return the sentence that says what is left."""
    if not attempted:
        return "Nothing was created in PVE; the minion key was removed."
    try:
        present = [r for r in api.guests() if r["vmid"] == int(vmid)]
        if not present:
            return f"PVE holds no guest {vmid} (nothing remains); the minion key was removed."
        _remove(api, present[0]["node"], kind, vmid, task_timeout,
                busy_upid=getattr(cause, "upid", None) if getattr(cause, "timed_out", False) else None)
        return f"The half-created guest {name} (VMID {vmid} on {node}) was stopped and destroyed; the minion key " \
               f"was removed."
    except Exception as exc:  # noqa: BLE001 - the report must say what remains, whatever happened
        log.error("removing %s (VMID %s) failed: %s", name, vmid, exc)
        return (
            f"REMAINS: guest {name} (VMID {vmid}, {kind} on node {node}) could not be removed ({exc}); remove it "
            f"with `salt-cloud -d {name}` or in PVE (`pct destroy {vmid}` / `qm destroy {vmid}`). The minion key "
            f"was removed."
        )


def _remove(api, node, kind, vmid, task_timeout, busy_upid=None):
    """Stop (and wait), then destroy (and wait) one guest. A task that timed out is stopped first."""
    base = f"nodes/{node}/{kind}/{vmid}"
    running = [t for t in api.get(f"nodes/{node}/tasks", vmid=vmid, source="active") or [] if not t.get("endtime")]
    upids = {t["upid"] for t in running if t.get("upid")}
    if busy_upid:
        upids.add(busy_upid)
    for upid in upids:
        try:
            api.request("delete", f"nodes/{node}/tasks/{upid}")
        except PveApiError as exc:
            log.warning("could not stop task %s: %s", upid, exc)
        try:
            api.wait_task(upid, f"waiting for the earlier task {upid} to end", task_timeout)
        except PveTaskError as exc:
            if exc.timed_out:
                raise
    status = api.get(f"{base}/status/current")
    if status.get("status") == "running":
        upid = api.request("post", f"{base}/status/stop")
        api.wait_task(upid, f"stopping {kind} {vmid}", task_timeout)
    params = {"purge": 1, "destroy-unreferenced-disks": 1}
    upid = api.request("delete", base, **params)
    api.wait_task(upid, f"destroying {kind} {vmid}", task_timeout)


# -- destroy and queries ---------------------------------------------------------------------------


def destroy(name, call=None):
    """Shut the guest down (forced after shutdown_timeout), wait, destroy it and remove its minion key."""
    if call == "function":
        raise SaltCloudSystemExit("The destroy action must be called with -d, --destroy, -a or --action.")
    api = _api()
    entry = _one(api, name)
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    task_timeout = float(_provider_value("task_timeout", 600))
    _fire(name, "destroying instance", "destroying", {"name": name})
    base = f"nodes/{node}/{kind}/{vmid}"
    if api.get(f"{base}/status/current").get("status") == "running":
        timeout = int(_provider_value("shutdown_timeout", 60))
        upid = api.request("post", f"{base}/status/shutdown", timeout=timeout, forceStop=1)
        api.wait_task(upid, f"{name}: shutting down {kind} {vmid}", timeout + task_timeout)
    _remove(api, node, kind, vmid, task_timeout)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
    _fire(name, "destroyed instance", "destroyed", {"name": name})
    return {name: {"destroyed": True, "vmid": vmid, "node": node}}


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


def list_nodes(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes function must be called with -f or --function.")
    api = _api()
    entries = [e for e in api.guests() if not e.get("template")]
    out = {}
    for key, entry in zip(_keys(entries), entries, strict=True):
        cfg = api.get(f"nodes/{entry['node']}/{entry['type']}/{entry['vmid']}/config")
        out[key] = _node(entry, _config_ips(entry["type"], cfg))
    return out


def _show(api, entry):
    node, kind, vmid = entry["node"], entry["type"], entry["vmid"]
    cfg = api.get(f"nodes/{node}/{kind}/{vmid}/config")
    status = api.get(f"nodes/{node}/{kind}/{vmid}/status/current")
    ips = _config_ips(kind, cfg)
    if status.get("status") == "running":
        for ip in _reported_ips(api, kind, node, vmid):
            if ip not in ips:
                ips.append(ip)
    data = _node({**entry, **{k: status[k] for k in ("status", "maxmem") if k in status}}, ips)
    data.update({"vmid": vmid, "node": node, "type": kind, "config": {k: v for k, v in cfg.items()
                                                                       if k not in ("sshkeys", "digest")}})
    return data


def list_nodes_full(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes_full function must be called with -f or --function.")
    api = _api()
    entries = [e for e in api.guests() if not e.get("template")]
    return {key: _show(api, entry) for key, entry in zip(_keys(entries), entries, strict=True)}


def list_nodes_select(call=None):
    return salt.utils.cloud.list_nodes_select(list_nodes_full("function"), __opts__["query.selection"], call)


def show_instance(name, call=None):
    if call != "action":
        raise SaltCloudSystemExit("The show_instance action must be called with -a or --action.")
    api = _api()
    return _show(api, _one(api, name))


def avail_images(call=None):
    """LXC OS templates on every storage of every node, and the QEMU templates (for clone_from)."""
    if call == "action":
        raise SaltCloudSystemExit("The avail_images function must be called with -f or --function.")
    api = _api()
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
    api = _api()
    return {n["node"]: {"status": n.get("status"), "maxcpu": n.get("maxcpu"), "maxmem": n.get("maxmem")}
            for n in api.get("nodes") or []}


def avail_sizes(call=None):
    return {"site": {"description": "cores, memory and disk come from the site's guest description"}}
