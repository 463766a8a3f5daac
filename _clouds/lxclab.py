"""
salt-cloud driver ``lxclab``: the site's guests as local LXC containers on this machine (the lab).

It stands beside the Proxmox driver so that ``salt-cloud -p`` / ``-m`` work the same against the
lab: the same profiles, the same site, the same ``salt/cloud/<name>/*`` events. A guest's size and
address come from the site (the master's own pillar for that minion id, validated by the
``platform`` ext_pillar), never from the profile. The new minion's key pair is generated here,
written into the guest before its first boot and accepted on the master, so no key is accepted
blindly. A ``kind: vm`` guest becomes a container too (there is no KVM in the lab); the lab's
report says so. A profile's ``features`` with ``nesting=1`` (``debian12-lxc-nested``, the guests
whose roles run Docker or k3s) makes a nested guest, as on Proxmox (``sitectl.lab.guests``,
NESTED_DATA_DIRS); ``keyctl`` needs nothing here, the lab's guests being privileged.

Provider configuration (rendered by ``sitectl master-config --overlay lab``)::

    platform:
      driver: lxclab
      lab_dir: /var/lib/sitectl-lab
      bridge: sitelab0
"""

import ipaddress
import logging

import salt.utils.cloud
from salt.exceptions import SaltCloudException, SaltCloudNotFound, SaltCloudSystemExit

from salt import config

log = logging.getLogger(__name__)

__virtualname__ = "lxclab"


def __virtual__():
    try:
        from sitectl.lab import host  # noqa: F401
    except ImportError as exc:
        return False, f"sitectl (the lab's host layer) is not importable: {exc}"
    if get_configured_provider() is False:
        return False, "no lxclab provider is configured"
    return __virtualname__


def get_configured_provider():
    from sitectl.cloud import configured_provider

    return configured_provider(__opts__, globals().get("__active_provider_name__"), __virtualname__, ())


def _provider_value(key, default):
    return config.get_cloud_config_value(key, get_configured_provider(), __opts__, default=default,
                                         search_global=False)


def _lab():
    from sitectl.lab import host

    return host, _provider_value("lab_dir", host.DEFAULT_LAB_DIR), _provider_value("bridge", host.DEFAULT_BRIDGE)


def _site_guest(name):
    from sitectl.cloud import site_guest

    return site_guest(__opts__, name)


def _fire(name, what, tag_suffix, vm_):
    from sitectl.cloud import fire

    fire(__utils__, __opts__, name, what, tag_suffix, vm_)


def create(vm_):
    """Create, seed, start one guest; fire the events salt-cloud drivers fire."""
    name = vm_["name"]
    host, lab_dir, bridge = _lab()
    guest, site = _site_guest(name)
    _fire(name, "starting create", "creating", vm_)

    net = ipaddress.ip_interface(guest["address"]).network
    gateway = site["network"]["gateway"]
    state = host.network_state(bridge)
    if not (state["bridge"] and state["table"]):
        host.network_up(bridge, f"{gateway}/{net.prefixlen}")
    nameserver = _host_nameserver()
    template = host.build_template()
    nesting = host.nesting_requested(config.get_cloud_config_value("features", vm_, __opts__, default=""))
    try:
        host.create_guest(name, guest["address"], gateway, nameserver, lab_dir=lab_dir, template=template,
                          memory_mib=guest["memory"], cores=guest["cores"], bridge=bridge, nesting=nesting,
                          mounts=tuple(m["path"] for m in guest.get("mounts", [])))
        _seed_minion(host, lab_dir, name, guest)
        _fire(name, "requesting instance", "requesting", vm_)
        host.start_guest(name, lab_dir=lab_dir, timeout=120)
    except Exception as exc:
        log.error("creating %s failed, removing what was made: %s", name, exc)
        host.destroy_guest(name, lab_dir=lab_dir)
        salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
        raise SaltCloudException(f"{name}: {exc}") from exc

    _fire(name, "created instance", "created", vm_)
    return show_instance(name, call="action")


def _host_nameserver():
    from sitectl.lab import aptsources

    return aptsources.host_nameservers()[0]


def _seed_minion(host, lab_dir, name, guest):
    keysize = config.get_cloud_config_value("keysize", {}, __opts__, default=2048)
    priv, pub = salt.utils.cloud.gen_keys(keysize)
    host.write_guest_file(name, "/etc/salt/pki/minion/minion.pem", priv.encode(), 0o400, lab_dir=lab_dir)
    host.write_guest_file(name, "/etc/salt/pki/minion/minion.pub", pub.encode(), 0o644, lab_dir=lab_dir)
    bootstrap = f"# Written by salt-cloud (lxclab) before the first boot.\nid: {name}\nmaster: {guest['master']}\n"
    bootstrap += "".join(f"{key}: {value}\n" for key, value in sorted(guest["minion"].items()))
    host.write_guest_file(name, "/etc/salt/minion.d/00-bootstrap.conf", bootstrap.encode(), 0o644, lab_dir=lab_dir)
    salt.utils.cloud.accept_key(__opts__["pki_dir"], pub, name)


def destroy(name, call=None):
    """Stop and remove a guest and its accepted key."""
    if call == "function":
        raise SaltCloudSystemExit("The destroy action must be called with -d, --destroy, -a or --action.")
    host, lab_dir, _ = _lab()
    if name not in {g["name"] for g in host.list_guests(lab_dir)}:
        raise SaltCloudNotFound(f"no lab guest named {name!r}")
    _fire(name, "destroying instance", "destroying", {"name": name})
    host.destroy_guest(name, lab_dir=lab_dir)
    salt.utils.cloud.remove_key(__opts__["pki_dir"], name)
    _fire(name, "destroyed instance", "destroyed", {"name": name})
    return {name: "destroyed"}


def _node(info):
    address = info.get("address") or ""
    ip = address.split("/")[0] if address else None
    return {
        "id": info["name"],
        "name": info["name"],
        "state": info.get("state", "unknown").lower(),
        "private_ips": [ip] if ip else [],
        "public_ips": [],
        "image": "debian-12 (lab template)",
        "size": f"{info.get('cores') or '-'} cores, {info.get('memory_mib') or '-'} MiB",
    }


def list_nodes(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes function must be called with -f or --function.")
    host, lab_dir, _ = _lab()
    return {g["name"]: _node(g) for g in host.list_guests(lab_dir)}


def list_nodes_full(call=None):
    if call == "action":
        raise SaltCloudSystemExit("The list_nodes_full function must be called with -f or --function.")
    host, lab_dir, _ = _lab()
    return {g["name"]: {**_node(g), **host.guest_info(g["name"], lab_dir)} for g in host.list_guests(lab_dir)}


def list_nodes_select(call=None):
    return salt.utils.cloud.list_nodes_select(list_nodes_full("function"), __opts__["query.selection"], call)


def show_instance(name, call=None):
    if call != "action":
        raise SaltCloudSystemExit("The show_instance action must be called with -a or --action.")
    host, lab_dir, _ = _lab()
    nodes = {g["name"]: g for g in host.list_guests(lab_dir)}
    if name not in nodes:
        raise SaltCloudNotFound(f"no lab guest named {name!r}")
    return {**_node(nodes[name]), **host.guest_info(name, lab_dir)}


def avail_images(call=None):
    host, _, _ = _lab()
    return {"debian-12": {"template": host.template_path()}}


def avail_locations(call=None):
    return {"localhost": {"description": "this machine (the lab)"}}


def avail_sizes(call=None):
    return {"site": {"description": "cores and memory come from the site's guest description"}}
