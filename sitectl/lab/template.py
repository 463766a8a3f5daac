"""Build (once) and cache the Debian 12 guest rootfs with systemd and Salt in a venv.

Layout under ``cache_dir`` (default /var/cache/sitectl-lab):

    bookworm-<key>/rootfs        the finished template (lower dir of every guest overlay)
    bookworm-<key>/recipe.json   what went into it
    wheels-<key>/                wheels built on the host for the guest's CPython 3.11
    debs/                        debootstrap's package cache (reused across rebuilds)
    .build-*/                    work in progress; renamed into place only when complete
    .lock                        flock held while building

``<key>`` is a hash of the recipe's inputs, including this file's own source, so editing the
recipe (or the host's extra CA certificates, or the mirror) yields a new template directory.
"""

from __future__ import annotations

import ast
import fcntl
import glob
import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

from . import aptsources
from ._util import SANE_PATH, LabError, host_env, run, unmount_under

DEFAULT_CACHE_DIR = "/var/cache/sitectl-lab"
SUITE = "bookworm"
SALT_VERSION = "3008.4"
VENV = "/opt/saltstack/salt"
# What production's minions install beside Salt: hvac for the vault_server modules and
# saltext-vault for the master-issued per-minion Vault tokens (versions as in pyproject.toml).
PIP_REQUIREMENTS = [f"salt=={SALT_VERSION}", "jsonschema==4.26.0", "hvac==2.4.0", "saltext-vault==1.8.0"]

PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "iputils-ping",
    "procps",
    "netbase",
    "python3",
    "python3-venv",
    "ca-certificates",
]

# Units that cannot work in a privileged LXC guest and would leave the system "degraded"
# or just add noise. Masked in the template (measured here, see README.md).
MASKED_UNITS: list[str] = []

SALT_MINION_UNIT = f"""\
[Unit]
Description=The Salt Minion (sitectl lab)
Documentation=man:salt-minion(1)
Wants=network-online.target
After=network-online.target
# Enabled, but it only runs once it has a config (no endless DNS retries for "salt").
ConditionPathExistsGlob=|/etc/salt/minion.d/*.conf
ConditionPathExists=|/etc/salt/minion

[Service]
Type=simple
KillMode=process
LimitNOFILE=8192
Restart=on-failure
RestartSec=5
Environment=LANG=C.UTF-8
ExecStart={VENV}/bin/salt-minion -c /etc/salt

[Install]
WantedBy=multi-user.target
"""

CHROOT_ENV = ["env", "-i", f"PATH={SANE_PATH}", "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]


def _file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _host_ca_files() -> list[str]:
    return sorted(
        p for p in glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True) if os.path.isfile(p)
    )


def recipe(mirror: str | None = None) -> dict:
    """Every input that determines the template's content."""
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": PACKAGES,
        "keyring": "/usr/share/keyrings/debian-archive-keyring.gpg",
        "mirror": mirror or aptsources.debian_mirror(SUITE),
        "guest_sources": aptsources.guest_sources_text(SUITE),
        "pip": PIP_REQUIREMENTS,
        "venv": VENV,
        "masked": MASKED_UNITS,
        "unit": SALT_MINION_UNIT,
        "ca_certs": {os.path.relpath(p, "/usr/local/share/ca-certificates"): _file_digest(p) for p in _host_ca_files()},
        # The build steps themselves, as syntax trees: formatting, comments and import order
        # do not change the key, any change to what the steps do does.
        "steps": hashlib.sha256("".join(_code_shape(f) for f in _RECIPE_CODE).encode()).hexdigest(),
    }


def _code_shape(func) -> str:
    return ast.dump(ast.parse(textwrap.dedent(inspect.getsource(func))))


def recipe_key(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def _wheel_python() -> str:
    """A CPython 3.11 on the host (the guest runs Debian's CPython 3.11)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    for name in ("python3.11", "/usr/bin/python3.11"):
        path = shutil.which(name)
        if path:
            return path
    raise LabError("no CPython 3.11 on the host to build cp311 wheels for the guest")


def build_wheels(cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """Build (once) every wheel Salt and friends need, on the host; return the directory.

    The host's venv installs from it too (sitectl.lab.bootstrap), so Salt's sdist and timelib's C
    code are built once, not once for the guests and again for the host at the same time. A lock
    makes the second caller wait for the first one's build."""
    key = hashlib.sha256(json.dumps([PIP_REQUIREMENTS, "cp311", "x86_64"]).encode()).hexdigest()[:16]
    final = os.path.join(cache_dir, f"wheels-{key}")
    if os.path.isdir(final):
        return final
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, ".wheels.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(final):
            return final  # built by the other caller while this one waited
        tmp = tempfile.mkdtemp(prefix=".build-wheels-", dir=cache_dir)
        # The caller's environment on purpose: pip's registry settings (PIP_CERT, pip.conf) apply.
        env = dict(os.environ)
        try:
            run(
                [_wheel_python(), "-m", "pip", "wheel", "--quiet", "--wheel-dir", tmp, *PIP_REQUIREMENTS],
                env=env,
                what="pip wheel (host)",
                timeout=1800,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.rename(tmp, final)
    return final


def _chroot(root: str, *argv: str, what: str | None = None, timeout: float = 900, input: str | None = None):
    # A private mount namespace with /proc (salt needs it): the mount vanishes with the
    # process, so an interrupted build never leaves a stale mount behind.
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, root, *CHROOT_ENV, *argv],
        what=what or f"chroot {argv[0]}",
        timeout=timeout,
        input=input,
    )


def _write(root: str, rel: str, text: str, mode: int = 0o644) -> None:
    path = os.path.join(root, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _customize(root: str, wheels: str, rec: dict) -> None:
    # apt: the host's mirror(s), deb822 only; keep the lists, drop the .debs later.
    if os.path.exists(os.path.join(root, "etc/apt/sources.list")):
        os.unlink(os.path.join(root, "etc/apt/sources.list"))
    _write(root, "etc/apt/sources.list.d/debian.sources", rec["guest_sources"])
    _write(root, "etc/apt/apt.conf.d/90sitectl-lab", 'APT::Install-Recommends "false";\nAcquire::Retries "3";\n')
    # Name resolution for the build itself; every guest gets its own resolv.conf.
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    _chroot(root, "apt-get", "update", what="apt-get update (template)")

    # The host's extra CA certificates (an HTTPS-intercepting egress needs them).
    ca_dir = os.path.join(root, "usr/local/share/ca-certificates")
    os.makedirs(ca_dir, exist_ok=True)
    for src in _host_ca_files():
        rel = os.path.relpath(src, "/usr/local/share/ca-certificates")
        dst = os.path.join(ca_dir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
    _chroot(root, "update-ca-certificates", what="update-ca-certificates (template)")

    # Salt in a venv, from wheels built on the host: no compiler in the template.
    inside = "/opt/sitectl-wheels"  # inside the chroot, removed below
    shutil.copytree(wheels, os.path.join(root, inside.lstrip("/")))
    _chroot(root, "python3", "-m", "venv", VENV, what="python3 -m venv (template)")
    _chroot(
        root,
        f"{VENV}/bin/pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        inside,
        *PIP_REQUIREMENTS,
        what="pip install salt (template)",
    )
    shutil.rmtree(os.path.join(root, inside.lstrip("/")))
    freeze = _chroot(root, f"{VENV}/bin/pip", "freeze", "--all", what="pip freeze (template)")
    _write(root, VENV.lstrip("/") + "/sitectl-freeze.txt", freeze.stdout)
    for prog in ("salt-call", "salt-minion"):
        link = os.path.join(root, "usr/bin", prog)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"{VENV}/bin/{prog}", link)

    # Salt's config dir and the minion unit (enabled, nothing started).
    os.makedirs(os.path.join(root, "etc/salt/minion.d"), exist_ok=True)
    os.makedirs(os.path.join(root, "etc/salt/pki/minion"), mode=0o700, exist_ok=True)
    _write(root, "etc/systemd/system/salt-minion.service", SALT_MINION_UNIT)
    _chroot(root, "systemctl", "enable", "salt-minion.service", what="systemctl enable")
    if MASKED_UNITS:
        _chroot(root, "systemctl", "mask", *MASKED_UNITS, what="systemctl mask")

    # Per-guest identity is written at create time; the template carries none.
    _write(root, "etc/machine-id", "", 0o444)
    dbus_id = os.path.join(root, "var/lib/dbus/machine-id")
    if os.path.lexists(dbus_id) and not os.path.islink(dbus_id):
        os.unlink(dbus_id)
        os.symlink("/etc/machine-id", dbus_id)
    _write(root, "etc/hostname", "localhost\n")
    _write(root, "etc/default/locale", "LANG=C.UTF-8\n")

    _chroot(root, "apt-get", "clean", what="apt-get clean (template)")
    for path in glob.glob(os.path.join(root, "var/cache/apt/*.bin")):
        os.unlink(path)
    for path in glob.glob(os.path.join(root, "var/log/*.log")):
        open(path, "w").close()

    out = _chroot(root, f"{VENV}/bin/salt-call", "--version", what="salt-call --version", timeout=120).stdout
    if SALT_VERSION not in out:
        raise LabError(f"salt-call --version in the template printed {out.strip()!r}, expected {SALT_VERSION}")


# Functions whose code is part of the recipe (see recipe()).
_RECIPE_CODE = (_chroot, _write, _customize, build_wheels)


def _dir_size(path: str) -> int:
    out = run(["du", "-sxb", path], check=False).stdout.split()
    return int(out[0]) if out else 0


def template_path(cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """Where the template for the current recipe lives (it may not be built yet)."""
    return os.path.join(cache_dir, f"{SUITE}-{recipe_key(recipe())}", "rootfs")


def _timed(fun, *args):
    t0 = time.monotonic()
    return fun(*args), time.monotonic() - t0


def build_template(cache_dir: str = DEFAULT_CACHE_DIR, force: bool = False) -> str:
    """Return the rootfs of the cached template, building it first if needed."""
    os.makedirs(cache_dir, exist_ok=True)
    rec = recipe()
    key = recipe_key(rec)
    final = os.path.join(cache_dir, f"{SUITE}-{key}")
    rootfs = os.path.join(final, "rootfs")
    if os.path.isdir(rootfs) and not force:
        return rootfs

    with open(os.path.join(cache_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(rootfs) and not force:
            return rootfs  # someone else built it while we waited
        # We hold the lock: every .build-* dir is a leftover of an interrupted build.
        for stale in glob.glob(os.path.join(cache_dir, ".build-*")):
            unmount_under(stale)
            shutil.rmtree(stale, ignore_errors=True)

        t0 = time.monotonic()
        work = tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir)
        os.chmod(work, 0o755)
        wroot = os.path.join(work, "rootfs")
        debs = os.path.join(cache_dir, "debs")
        os.makedirs(debs, exist_ok=True)
        try:
            # The guests' wheels are built on the host while debootstrap fills the rootfs: the two
            # share nothing until _customize installs the wheels (issue 21: 11 s off a cold build).
            with ThreadPoolExecutor(max_workers=1) as pool:
                wheels_job = pool.submit(_timed, build_wheels, cache_dir)
                run(
                    [
                        "debootstrap",
                        f"--variant={rec['variant']}",
                        f"--include={','.join(rec['packages'])}",
                        f"--cache-dir={debs}",
                        f"--keyring={rec['keyring']}",
                        rec["suite"],
                        wroot,
                        rec["mirror"],
                    ],
                    what="debootstrap",
                    timeout=1800,
                    env=host_env(),
                )
                t_boot = time.monotonic() - t0
                wheels, t_wheels = wheels_job.result()
            _customize(wroot, wheels, rec)
            meta = dict(
                rec,
                key=key,
                built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                seconds={
                    "wheels": round(t_wheels, 1),
                    "debootstrap": round(t_boot, 1),
                    "total": round(time.monotonic() - t0, 1),
                },
                size_bytes=_dir_size(wroot),
            )
            with open(os.path.join(work, "recipe.json"), "w", encoding="utf-8") as fh:
                json.dump(meta, fh, indent=2, sort_keys=True)
            if os.path.exists(final):  # force=True: move the old one aside first
                old = tempfile.mkdtemp(prefix=".build-old-", dir=cache_dir)
                os.rename(final, os.path.join(old, "t"))
                shutil.rmtree(old, ignore_errors=True)
            os.rename(work, final)
        except BaseException:
            unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)
            raise
    return rootfs


def template_info(rootfs: str) -> dict:
    """The recipe.json of a built template."""
    with open(os.path.join(os.path.dirname(rootfs), "recipe.json"), encoding="utf-8") as fh:
        return json.load(fh)
