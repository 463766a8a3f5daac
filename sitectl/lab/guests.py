"""LXC guests with systemd: overlay rootfs over the cached template, static address on the bridge.

Per guest, under ``lab_dir`` (the LXC path, default /var/lib/sitectl-lab):

    <name>/config     LXC config (written last at create: no config = half-created guest)
    <name>/delta      overlay upper dir (the guest's own changes)
    <name>/olwork     overlay work dir (LXC creates it beside the delta)
    <name>/rootfs     mount point (mounted only inside the guest's mount namespace)
    <name>/lab.json   what create_guest was asked for
    <name>/console.log, lxc.log
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid

from ._util import SANE_PATH, LabError, run, unmount_under
from .network import DEFAULT_BRIDGE

DEFAULT_LAB_DIR = "/var/lib/sitectl-lab"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
GUEST_ENV = {"PATH": SANE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
# A nested guest (a role with `nesting: true`: Docker, k3s) keeps its container runtimes' data on the
# host's own filesystem, bind-mounted from <guest dir>/nested/: the guest's root is an overlay, and
# overlayfs refuses an overlay upper dir, so Docker's overlay2 (and containerd's overlayfs
# snapshotter) would not work on it. On Proxmox the guest's root is a plain filesystem already.
NESTED_DATA_DIRS = ("var/lib/docker", "var/lib/containerd", "var/lib/rancher")
# A guest's mount points (site.guests.<name>.mounts; PVE's mp0, mp1, ... in production) are folders of
# the host, <guest dir>/mounts/mp<N>, bind-mounted at their paths: a mount point in the guest as on PVE.
MOUNTS_DIR = "mounts"


def nesting_requested(features) -> bool:
    """Whether a salt-cloud profile's Proxmox ``features`` (``"nesting=1,keyctl=1"``) ask for nesting."""
    flags = dict(item.split("=", 1) for item in str(features or "").replace(" ", "").split(",") if "=" in item)
    return flags.get("nesting") in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------- helpers


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LabError(f"invalid guest name {name!r} (lowercase letters, digits, '-'; it is also the host name)")


def _gdir(lab_dir: str, name: str) -> str:
    return os.path.join(lab_dir, name)


def _lxc(cmd: str, lab_dir: str, name: str, *args: str) -> list[str]:
    return [cmd, "-P", lab_dir, "-n", name, *args]


def _meta(lab_dir: str, name: str) -> dict | None:
    try:
        with open(os.path.join(_gdir(lab_dir, name), "lab.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _has_config(lab_dir: str, name: str) -> bool:
    return os.path.isfile(os.path.join(_gdir(lab_dir, name), "config"))


def _state(lab_dir: str, name: str) -> str:
    """RUNNING / STOPPED / ... as lxc-info says; ABSENT without config."""
    if not _has_config(lab_dir, name):
        return "ABSENT" if not os.path.isdir(_gdir(lab_dir, name)) else "INCOMPLETE"
    cp = run(_lxc("lxc-info", lab_dir, name, "-s", "-H"), check=False, guest=name)
    return cp.stdout.strip() or "UNKNOWN"


def _cgroup_version() -> int:
    # Pure cgroup2 ("unified") only when the root itself is cgroup2.
    return 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1


def _limit_lines(memory_mib: int | None, cores: int | float | None) -> list[str]:
    lines = []
    v = _cgroup_version()
    if memory_mib:
        b = int(memory_mib) * 1024 * 1024
        if v == 2:
            lines += [f"lxc.cgroup2.memory.max = {b}"]
        elif os.path.isdir("/sys/fs/cgroup/memory"):
            lines += [f"lxc.cgroup.memory.limit_in_bytes = {b}"]
    if cores:
        quota = int(float(cores) * 100000)
        if v == 2:
            lines += [f"lxc.cgroup2.cpu.max = {quota} 100000"]
        elif os.path.isdir("/sys/fs/cgroup/cpu"):
            lines += ["lxc.cgroup.cpu.cfs_period_us = 100000", f"lxc.cgroup.cpu.cfs_quota_us = {quota}"]
    return lines


def guest_mac(name: str, address_cidr: str) -> str:
    """A locally administered unicast MAC, the same for the same guest and address on every start."""
    digest = hashlib.sha256(f"{name}/{address_cidr}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def render_config(
    name: str,
    lab_dir: str,
    template: str,
    address_cidr: str,
    gateway: str,
    bridge: str,
    memory_mib: int | None = None,
    cores: int | float | None = None,
    nesting: bool = False,
    mounts: tuple[str, ...] = (),
) -> str:
    g = _gdir(lab_dir, name)
    lines = [
        "# managed by sitectl.lab - do not edit",
        "lxc.include = /usr/share/lxc/config/common.conf",
        "lxc.arch = amd64",
        f"lxc.uts.name = {name}",
        f"lxc.rootfs.path = overlay:{template}:{g}/delta",
        f"lxc.rootfs.mount = {g}/rootfs",
        "lxc.apparmor.profile = unconfined",
        "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
        "lxc.cgroup.relative = 1",
        "lxc.autodev = 1",
        # systemd as PID 1: SIGRTMIN+4 = poweroff, SIGINT = reboot (ctrl-alt-del)
        "lxc.signal.halt = SIGRTMIN+4",
        "lxc.signal.reboot = SIGINT",
        f"lxc.console.logfile = {g}/console.log",
        "lxc.net.0.type = veth",
        f"lxc.net.0.link = {bridge}",
        "lxc.net.0.flags = up",
        "lxc.net.0.name = eth0",
        # A MAC of its own that survives a restart, as a Proxmox guest's config keeps one: with a new
        # random MAC on every start the other guests' neighbour caches point at the old one for a while.
        f"lxc.net.0.hwaddr = {guest_mac(name, address_cidr)}",
        # explicit broadcast: LXC 5.0.2 otherwise sets "brd 0.0.0.255" for a /24
        f"lxc.net.0.ipv4.address = {address_cidr} {ipaddress.ip_interface(address_cidr).network.broadcast_address}",
        f"lxc.net.0.ipv4.gateway = {gateway}",
    ]
    lines += _limit_lines(memory_mib, cores)
    lines += [f"lxc.mount.entry = {g}/{MOUNTS_DIR}/mp{n} {path.strip('/')} none bind,create=dir 0 0"
              for n, path in enumerate(mounts)]
    if nesting:
        lines += [f"lxc.mount.entry = {g}/nested/{d.replace('/', '-')} {d} none bind,create=dir 0 0"
                  for d in NESTED_DATA_DIRS]
        # runc allows its containers /dev/net/tun; on cgroup v1 a child cgroup cannot allow a device
        # its parent denies, so every container start would fail (EPERM) without it.
        lines += ["lxc.cgroup.devices.allow = c 10:200 rwm" if _cgroup_version() == 1
                  else "lxc.cgroup2.devices.allow = c 10:200 rwm"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------- writing into a stopped guest's delta


def _is_whiteout(path: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _merged_lstat(template: str, delta: str, rel: str):
    """lstat of ``rel`` as the guest sees it (delta over template); None if absent."""
    up = os.path.join(delta, rel)
    if os.path.lexists(up):
        return None if _is_whiteout(up) else os.lstat(up)
    # an opaque or whiteout parent in the delta hides the template's entry
    parts = rel.split("/")
    for i in range(1, len(parts)):
        p = os.path.join(delta, *parts[:i])
        if _is_whiteout(p):
            return None
        try:
            if os.getxattr(p, "trusted.overlay.opaque") == b"y":
                return None
        except OSError:
            pass
    low = os.path.join(template, rel)
    return os.lstat(low) if os.path.lexists(low) else None


def _resolve_parent(template: str, delta: str, guest_path: str, name: str) -> tuple[str, str]:
    """Resolve symlinks in the parent dirs of guest_path inside the merged view.

    Returns (parent_rel, basename); the basename itself is not followed (it is replaced).
    """
    if not guest_path.startswith("/"):
        raise LabError(f"guest path must be absolute: {guest_path!r}", guest=name)
    todo = [p for p in guest_path.strip("/").split("/") if p not in ("", ".")]
    if not todo:
        raise LabError(f"not a file path: {guest_path!r}", guest=name)
    base = todo.pop()
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        rel = "/".join(done + [part])
        st = _merged_lstat(template, delta, rel)
        if st is not None and stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise LabError(f"too many symlinks resolving {guest_path!r}", guest=name)
            src = os.path.join(delta, rel)
            if not os.path.lexists(src):
                src = os.path.join(template, rel)
            target = os.readlink(src)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.strip("/").split("/") if p not in ("", ".")] + todo
            continue
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise LabError(f"/{rel} is not a directory in the guest", guest=name)
        done.append(part)
    if base == "..":
        raise LabError(f"not a file path: {guest_path!r}", guest=name)
    return "/".join(done), base


def _ensure_upper_dirs(template: str, delta: str, rel: str) -> None:
    """Create rel's directories in the delta with the template's owner and mode."""
    cur = ""
    for part in [p for p in rel.split("/") if p]:
        cur = f"{cur}/{part}" if cur else part
        up = os.path.join(delta, cur)
        if _is_whiteout(up):
            os.unlink(up)
        if os.path.isdir(up) and not os.path.islink(up):
            continue
        low = os.path.join(template, cur)
        os.mkdir(up)
        if os.path.isdir(low) and not os.path.islink(low):
            st = os.stat(low)
            os.chown(up, st.st_uid, st.st_gid)
            os.chmod(up, stat.S_IMODE(st.st_mode))
        else:
            os.chmod(up, 0o755)


def _write_delta(template: str, delta: str, guest_path: str, content: bytes, mode: int, name: str) -> None:
    parent, base = _resolve_parent(template, delta, guest_path, name)
    _ensure_upper_dirs(template, delta, parent)
    target = os.path.join(delta, parent, base)
    if os.path.isdir(target) and not os.path.islink(target):
        raise LabError(f"{guest_path} is a directory in the guest", guest=name)
    tmp = os.path.join(delta, parent, f".{base}.sitectl-tmp")
    with open(tmp, "wb") as fh:
        fh.write(content)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def _checked_mounts(name: str, mounts) -> tuple[str, ...]:
    for path in mounts:
        if not path.startswith("/") or path.strip("/") == "" or ".." in path.split("/") or " " in path:
            raise LabError(f"mount path must be absolute, not /, without '..' or spaces: {path!r}", guest=name)
    return tuple(mounts)


# ------------------------------------------------------------------------------ the API


def create_guest(
    name: str,
    address_cidr: str,
    gateway: str,
    nameserver: str,
    lab_dir: str = DEFAULT_LAB_DIR,
    template: str | None = None,
    memory_mib: int | None = None,
    cores: int | float | None = None,
    bridge: str = DEFAULT_BRIDGE,
    nesting: bool = False,
    mounts: tuple[str, ...] = (),
) -> dict:
    """Create a stopped guest (idempotent: same arguments again = no-op). Returns guest_info.
    ``nesting``: the guest runs containers itself (Docker, k3s), see NESTED_DATA_DIRS. ``mounts``: the
    guest paths of its mount points, see MOUNTS_DIR."""
    _check_name(name)
    iface = ipaddress.ip_interface(address_cidr)
    if iface.version != 4 or iface.network.prefixlen == 32:
        raise LabError(f"address_cidr must be IPv4 with a prefix, got {address_cidr!r}", guest=name)
    ipaddress.IPv4Address(gateway)
    ipaddress.IPv4Address(nameserver)
    if template is None:
        from .template import build_template

        template = build_template()
    template = os.path.realpath(template)
    if not os.path.isfile(os.path.join(template, "sbin/init")) and not os.path.islink(
        os.path.join(template, "sbin/init")
    ):
        raise LabError(f"template {template} has no /sbin/init", guest=name)

    lab_dir = os.path.realpath(lab_dir)
    g = _gdir(lab_dir, name)
    mounts = _checked_mounts(name, mounts)
    cfg = render_config(name, lab_dir, template, str(iface), gateway, bridge, memory_mib, cores, nesting, mounts)
    meta = {
        "name": name,
        "address": str(iface),
        "gateway": gateway,
        "nameserver": nameserver,
        "bridge": bridge,
        "template": template,
        "memory_mib": memory_mib,
        "cores": cores,
        **({"nesting": True} if nesting else {}),
        **({"mounts": list(mounts)} if mounts else {}),
    }

    if _has_config(lab_dir, name):
        with open(os.path.join(g, "config"), encoding="utf-8") as fh:
            if fh.read() == cfg and _meta(lab_dir, name) == meta:
                return guest_info(name, lab_dir)
        raise LabError("exists with a different configuration; destroy it first", guest=name)
    if os.path.isdir(g):  # half-created by an interrupted run: start over
        _remove_guest_dir(lab_dir, name)

    os.makedirs(lab_dir, mode=0o755, exist_ok=True)
    os.makedirs(g, mode=0o755)
    delta = os.path.join(g, "delta")
    os.makedirs(delta, mode=0o755)
    os.makedirs(os.path.join(g, "rootfs"), mode=0o755)
    os.chmod(delta, stat.S_IMODE(os.stat(template).st_mode))
    if nesting:
        for d in NESTED_DATA_DIRS:
            os.makedirs(os.path.join(g, "nested", d.replace("/", "-")), mode=0o711)
    for n in range(len(mounts)):
        os.makedirs(os.path.join(g, MOUNTS_DIR, f"mp{n}"), mode=0o755)

    ip = str(iface.ip)
    files = {
        "/etc/hostname": f"{name}\n",
        "/etc/hosts": (
            f"127.0.0.1\tlocalhost\n{ip}\t{name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
        "/etc/resolv.conf": f"nameserver {nameserver}\n",
        "/etc/machine-id": uuid.uuid4().hex + "\n",
    }
    for path, text in files.items():
        _write_delta(template, delta, path, text.encode(), 0o444 if "machine-id" in path else 0o644, name)
    with open(os.path.join(g, "lab.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
    tmp = os.path.join(g, ".config.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(cfg)
    os.replace(tmp, os.path.join(g, "config"))  # the guest exists from here on
    return guest_info(name, lab_dir)


def attach(
    name: str,
    argv: list[str],
    input: bytes | str | None = None,
    check: bool = True,
    lab_dir: str = DEFAULT_LAB_DIR,
    timeout: float | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run argv in a running guest (lxc-attach --clear-env, sane PATH).

    Output is text unless ``input`` is bytes. With check=True a non-zero exit raises LabError.
    """
    lab_dir = os.path.realpath(lab_dir)
    if not _has_config(lab_dir, name):
        raise LabError("no such guest", guest=name)
    cmd = _lxc("lxc-attach", lab_dir, name, "--clear-env")
    for k, v in {**GUEST_ENV, **(env or {})}.items():
        cmd += ["--set-var", f"{k}={v}"]
    cmd += ["--", *argv]
    return run(cmd, guest=name, input=input, check=check, timeout=timeout, what=f"in guest: {argv[0] if argv else ''}")


def write_guest_file(name: str, path: str, content: bytes, mode: int = 0o644, lab_dir: str = DEFAULT_LAB_DIR) -> None:
    """Write a root-owned file into the guest: via the delta when stopped, lxc-attach when running."""
    lab_dir = os.path.realpath(lab_dir)
    if isinstance(content, str):
        content = content.encode()
    state = _state(lab_dir, name)
    if state in ("ABSENT", "INCOMPLETE"):
        raise LabError("no such guest", guest=name)
    if state == "STOPPED":
        meta = _meta(lab_dir, name) or {}
        _write_delta(meta["template"], os.path.join(_gdir(lab_dir, name), "delta"), path, content, mode, name)
        return
    if state != "RUNNING":
        raise LabError(f"cannot write {path} while the guest is {state}", guest=name)
    script = (
        'set -e; d=$(dirname "$1"); mkdir -p "$d"; t="$d/.$(basename "$1").sitectl-tmp"; '
        'cat > "$t"; chown 0:0 "$t"; chmod "$2" "$t"; mv -f "$t" "$1"'
    )
    attach(name, ["sh", "-c", script, "sh", path, format(mode, "o")], input=content, lab_dir=lab_dir)


def _log_errors(gdir: str, lines: int = 15) -> str:
    """The last ERROR lines of the guest's lxc.log (why lxc-start failed)."""
    try:
        with open(os.path.join(gdir, "lxc.log"), encoding="utf-8", errors="replace") as fh:
            errs = [ln.rstrip() for ln in fh if " ERROR " in ln]
    except OSError:
        return ""
    return ("\n" + "\n".join(errs[-lines:])) if errs else ""


def _failed_units(name: str, lab_dir: str) -> list[str]:
    cp = attach(
        name,
        ["systemctl", "--failed", "--no-legend", "--plain", "--no-pager"],
        check=False,
        lab_dir=lab_dir,
        timeout=20,
    )
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def start_guest(name: str, timeout: float = 60, lab_dir: str = DEFAULT_LAB_DIR, allow_degraded: bool = False) -> dict:
    """Start the guest and wait until systemd reports "running".

    "degraded" raises LabError naming the failed units (unless allow_degraded); the returned
    guest_info then carries them in ``failed_units``.
    """
    lab_dir = os.path.realpath(lab_dir)
    g = _gdir(lab_dir, name)
    state = _state(lab_dir, name)
    if state in ("ABSENT", "INCOMPLETE"):
        raise LabError("no such guest (or half-created: destroy it)", guest=name)
    t0 = time.monotonic()
    if state != "RUNNING":
        log = os.path.join(g, "lxc.log")
        if os.path.exists(log):
            os.replace(log, log + ".1")
        cmd = _lxc("lxc-start", lab_dir, name, "-d", "-l", "INFO", "-o", log)
        cp = run(cmd, guest=name, check=False, timeout=60)
        if cp.returncode != 0:
            raise LabError(
                "lxc-start failed",
                guest=name,
                command=cmd,
                returncode=cp.returncode,
                stderr=(cp.stderr or "") + _log_errors(g),
            )
    deadline = t0 + timeout
    last = ""
    while True:
        cp = attach(
            name,
            ["systemctl", "is-system-running"],
            check=False,
            lab_dir=lab_dir,
            timeout=max(1.0, min(10.0, deadline - time.monotonic())),
        )
        last = ((cp.stdout.strip() or cp.stderr.strip()).splitlines()[-1:] or [""])[0]
        if cp.returncode != 0 and not cp.stdout.strip() and _state(lab_dir, name) == "STOPPED":
            raise LabError("stopped while booting", guest=name, stderr=_log_errors(g) + f"\n(see {g}/console.log)")
        if last == "running":
            break
        if last == "degraded":
            failed = _failed_units(name, lab_dir)
            if not allow_degraded:
                detail = attach(
                    name,
                    ["systemctl", "status", "--no-pager", "--lines=5", *failed],
                    check=False,
                    lab_dir=lab_dir,
                    timeout=20,
                ).stdout
                raise LabError(f"booted degraded; failed units: {', '.join(failed) or '?'}", guest=name, stdout=detail)
            info = guest_info(name, lab_dir)
            info.update(system_state="degraded", failed_units=failed, boot_seconds=round(time.monotonic() - t0, 2))
            return info
        if last in ("stopping", "offline") and _state(lab_dir, name) != "RUNNING":
            raise LabError(f"guest stopped while booting (see {g}/console.log)", guest=name)
        if time.monotonic() > deadline:
            raise LabError(f"not running after {timeout}s (systemd says {last!r}; see {g}/console.log)", guest=name)
        time.sleep(0.2)
    info = guest_info(name, lab_dir)
    info.update(system_state="running", failed_units=[], boot_seconds=round(time.monotonic() - t0, 2))
    return info


def stop_guest(name: str, lab_dir: str = DEFAULT_LAB_DIR, timeout: int = 30) -> None:
    """Clean shutdown (systemd poweroff), killed after ``timeout``. No-op when stopped/absent."""
    lab_dir = os.path.realpath(lab_dir)
    if _state(lab_dir, name) in ("ABSENT", "INCOMPLETE", "STOPPED"):
        return
    cp = run(_lxc("lxc-stop", lab_dir, name, "-t", str(timeout)), guest=name, check=False, timeout=timeout + 30)
    if _state(lab_dir, name) != "STOPPED":
        run(_lxc("lxc-stop", lab_dir, name, "-k"), guest=name, check=False, timeout=30)
    if _state(lab_dir, name) != "STOPPED":
        raise LabError(
            "could not be stopped",
            guest=name,
            command=_lxc("lxc-stop", lab_dir, name, "-t", str(timeout)),
            returncode=cp.returncode,
            stderr=cp.stderr,
        )


def _monitor_pids(lab_dir: str, name: str | None = None) -> dict[int, str]:
    """PIDs of "[lxc monitor] LAB_DIR NAME" processes (also for guests whose config is gone)."""
    found = {}
    prefix = f"[lxc monitor] {lab_dir} "
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd.startswith(prefix):
            gname = cmd[len(prefix) :].strip()
            if name is None or gname == name:
                found[int(pid)] = gname
    return found


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _kill_orphans(lab_dir: str, name: str) -> None:
    """Kill the monitor and the guest's init of a guest LXC cannot stop (config lost)."""
    for pid in _monitor_pids(lab_dir, name):
        for child in _children(pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(50):
        if not _monitor_pids(lab_dir, name):
            return
        time.sleep(0.1)


def _cgroup_leftovers(name: str | None) -> list[str]:
    """Empty LXC cgroup folders of ``name`` (or only lxc.pivot when name is None), deepest first."""
    pats = ["lxc.pivot"]
    if name:
        pats += [f"lxc.payload.{name}", f"lxc.monitor.{name}"]
    out = []
    base = "/sys/fs/cgroup"
    hier = (
        [base] + [os.path.join(base, d) for d in sorted(os.listdir(base)) if os.path.isdir(os.path.join(base, d))]
        if os.path.isdir(base)
        else []
    )
    for h in hier:
        for p in pats:
            top = os.path.join(h, p)
            if os.path.isdir(top):
                for dirpath, _dirs, _files in os.walk(top, topdown=False):
                    out.append(dirpath)
    return out


def remove_cgroups(name: str | None) -> None:
    for d in _cgroup_leftovers(name):
        try:
            os.rmdir(d)
        except OSError:
            pass  # still in use (another guest) or already gone


def _remove_guest_dir(lab_dir: str, name: str) -> None:
    g = _gdir(lab_dir, name)
    _kill_orphans(lab_dir, name)
    unmount_under(g, guest=name)
    if os.path.lexists(g):
        shutil.rmtree(g)
    remove_cgroups(name)


def destroy_guest(name: str, lab_dir: str = DEFAULT_LAB_DIR) -> None:
    """Stop and remove the guest: config, delta, logs, mounts, cgroups. Safe if absent."""
    lab_dir = os.path.realpath(lab_dir)
    if _has_config(lab_dir, name):
        stop_guest(name, lab_dir, timeout=15)
    _remove_guest_dir(lab_dir, name)


def guest_info(name: str, lab_dir: str = DEFAULT_LAB_DIR) -> dict:
    lab_dir = os.path.realpath(lab_dir)
    state = _state(lab_dir, name)
    if state == "ABSENT":
        raise LabError("no such guest", guest=name)
    meta = _meta(lab_dir, name) or {}
    addr = meta.get("address")
    info = {
        "name": name,
        "state": state,
        "address": addr.split("/")[0] if addr else None,
        "address_cidr": addr,
        "gateway": meta.get("gateway"),
        "nameserver": meta.get("nameserver"),
        "bridge": meta.get("bridge"),
        "template": meta.get("template"),
        "memory_mib": meta.get("memory_mib"),
        "cores": meta.get("cores"),
        "nesting": meta.get("nesting", False),
        "dir": _gdir(lab_dir, name),
        "pid": None,
    }
    if state == "RUNNING":
        cp = run(_lxc("lxc-info", lab_dir, name, "-p", "-H"), check=False, guest=name)
        if cp.stdout.strip().isdigit():
            info["pid"] = int(cp.stdout.strip())
    return info


def list_guests(lab_dir: str = DEFAULT_LAB_DIR) -> list[dict]:
    lab_dir = os.path.realpath(lab_dir)
    if not os.path.isdir(lab_dir):
        return []
    out = []
    for name in sorted(os.listdir(lab_dir)):
        if os.path.isdir(_gdir(lab_dir, name)) and _NAME_RE.match(name):
            out.append(guest_info(name, lab_dir))
    return out
