"""
Releases of a Go service: source fetched at a pinned version, built with a pinned toolchain into a
versioned release directory, switched to by an atomic ``current`` link, health-checked, and rolled
back when the new release is not healthy. The ``go_service`` states call these functions.

A release is named by what it was built from, so the same input is the same release:

- ``{"git": {"url", "ref", ...}}``: the commit ``ref`` resolves to (a branch, a tag or a commit),
  fetched into a bare mirror under the base directory. Credentials come from Vault when the
  functions run: an HTTPS token (sent as an ``Authorization`` header through git's environment,
  never on a command line) or an SSH deploy key (a 0600 file removed after the fetch, host keys
  pinned by ``known_hosts``);
- ``{"archive": {"url", "sha256"}}``: a tarball (``salt://``, ``https://``) with its checksum;
- ``{"tree": {"url"}}``: a directory of the master's file roots (``salt://...``), named by the
  checksum of its files (the lab's example service ships with the state tree this way).

Layout under ``base_dir``: ``releases/<id>/bin/<binary>`` and ``releases/<id>/RELEASE.json``,
``current -> releases/<id>``, ``source.git`` (the mirror), ``build/`` (sources being built, removed
after), ``cache/`` (Go's build cache), ``failed/<id>`` (why a release was refused: it is not tried
again until its id changes or the file is removed).
"""

import base64
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "go_service"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_ID = re.compile(r"^[0-9a-f]{12}$")
ID_LENGTH = 12


def __virtual__():
    return __virtualname__


# -- sources --------------------------------------------------------------------------------------

def _kind(source):
    kinds = [k for k in ("git", "archive", "tree") if (source or {}).get(k)]
    if len(kinds) != 1:
        raise CommandExecutionError(f"source: expected exactly one of git, archive or tree, got {kinds or 'none'}")
    return kinds[0], source[kinds[0]]


def describe(source):
    """What a release is built from, without credentials (for comments and RELEASE.json)."""
    kind, spec = _kind(source)
    if kind == "git":
        return f"{spec['url']} at {spec.get('ref')}"
    if kind == "archive":
        return f"{spec['url']} (sha256 {spec['sha256']})"
    return spec["url"]


def _run(argv, env=None, cwd=None, input=None, timeout=900):
    """``argv`` with ``env`` (the whole environment: nothing leaks in from the minion's); output
    returned, never logged, since git's environment may carry a credential."""
    log.debug("go_service: running %s", argv[:3])
    try:
        cp = subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"{argv[0]}: {exc}") from exc
    return cp


def _text(raw):
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _secret(ref):
    """A ``vault:<path>#<field>`` reference read from Vault now (the role's policy covers it)."""
    match = re.match(r"^vault:([A-Za-z0-9_./-]+)#([A-Za-z0-9_-]+)$", ref or "")
    if not match:
        raise CommandExecutionError(f"{ref!r} is not a Vault reference vault:<path>#<field>")
    return __salt__["vault_server.secret_read"](match.group(1), match.group(2))


class _GitAuth:
    """The environment git needs for ``spec``'s credentials; a deploy key lives in a 0700 temp
    directory for the duration of the ``with`` block only."""

    def __init__(self, spec):
        self.spec = spec
        self.tmp = None

    def __enter__(self):
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_TERMINAL_PROMPT": "0",
               "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
        if self.spec.get("token"):
            user = self.spec.get("token_user") or "oauth2"
            basic = base64.b64encode(f"{user}:{_secret(self.spec['token'])}".encode()).decode()
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        if self.spec.get("deploy_key"):
            self.tmp = tempfile.mkdtemp(prefix="go-service-git-")
            key = os.path.join(self.tmp, "key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(_secret(self.spec["deploy_key"]).rstrip("\n") + "\n")
            known = os.path.join(self.tmp, "known_hosts")
            with open(known, "w", encoding="utf-8") as fh:
                fh.write("\n".join(self.spec.get("known_hosts") or []) + "\n")
            env["GIT_SSH_COMMAND"] = (f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
                                      f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}")
        return env

    def __exit__(self, *exc):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _mirror(base_dir):
    return os.path.join(base_dir, "source.git")


def _git(mirror, *args, env=None, input=None):
    cp = _run(["git", f"--git-dir={mirror}", *args], env=env or {"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
              input=input)
    return cp


def _git_resolve(base_dir, spec, fetch=True):
    ref = str(spec.get("ref") or "")
    if not _REF.match(ref) or ".." in ref:
        raise CommandExecutionError(f"git ref {ref!r}: expected a branch, tag or commit name")
    mirror = _mirror(base_dir)
    if not os.path.isdir(mirror):
        os.makedirs(base_dir, mode=0o755, exist_ok=True)
        cp = _run(["git", "init", "--bare", "-q", mirror], env={"PATH": "/usr/bin:/bin"})
        if cp.returncode != 0:
            raise CommandExecutionError(f"git init {mirror}: {_text(cp.stderr).strip()}")
    known = _git(mirror, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    if fetch and not (_COMMIT.match(ref) and known.returncode == 0):
        with _GitAuth(spec) as env:
            cp = _git(mirror, "fetch", "-q", "--prune", "--force", "--tags", spec["url"],
                      "+refs/heads/*:refs/heads/*", env=env)
        if cp.returncode != 0:
            raise CommandExecutionError(f"git fetch {spec['url']}: {_text(cp.stderr).strip()[-500:]}")
        known = _git(mirror, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    if known.returncode != 0:
        raise CommandExecutionError(f"git ref {ref!r} is not in {spec['url']}")
    return _text(known.stdout).strip()


def _tree_files(url):
    """The files of the master's directory ``url``, cached on the minion: relative path -> local path."""
    cached = __salt__["cp.cache_dir"](url)
    if not cached:
        raise CommandExecutionError(f"{url}: no such directory on the master")
    prefix = url[len("salt://"):].strip("/")
    files = {}
    for path in cached:
        marker = f"/{prefix}/"
        if marker not in path:
            continue
        rel = path.split(marker, 1)[1]
        if "__pycache__" not in rel:
            files[rel] = path
    return files


def _tree_digest(files):
    digest = hashlib.sha256()
    for rel in sorted(files):
        with open(files[rel], "rb") as fh:
            content = fh.read()
        digest.update(f"{rel}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def resolve(source, base_dir, fetch=True):
    """The release id of ``source``: 12 hex digits of the commit (git), the archive's sha256, or the
    checksum of the tree's files. ``fetch=False`` resolves a git ref from the mirror alone."""
    kind, spec = _kind(source)
    if kind == "git":
        return _git_resolve(base_dir, spec, fetch)[:ID_LENGTH]
    if kind == "archive":
        sha = str(spec.get("sha256") or "").lower()
        if not re.match(r"^[0-9a-f]{64}$", sha):
            raise CommandExecutionError(f"archive {spec.get('url')}: sha256 must be 64 hex digits")
        return sha[:ID_LENGTH]
    return _tree_digest(_tree_files(spec["url"]))[:ID_LENGTH]


def _safe_extract(data, dest, strip=0):
    """Regular files and directories of a tar stream under ``dest``; links and devices are no part of a
    Go source tree and are skipped, a path leaving ``dest`` is refused."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if member.name.startswith("/") or ".." in parts:
                raise CommandExecutionError(f"archive member {member.name!r} leaves the build directory")
            parts = parts[strip:]
            if not parts or not (member.isdir() or member.isfile()):
                continue
            target = os.path.join(dest, *parts)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def _fetch_into(kind, spec, base_dir, release_id, dest):
    if kind == "git":
        commit = _git_resolve(base_dir, spec, fetch=False)
        if commit[:ID_LENGTH] != release_id:
            raise CommandExecutionError(f"git ref {spec['ref']!r} moved during the run ({commit[:ID_LENGTH]})")
        cp = _git(_mirror(base_dir), "archive", "--format=tar", commit)
        if cp.returncode != 0:
            raise CommandExecutionError(f"git archive {commit}: {_text(cp.stderr).strip()}")
        _safe_extract(cp.stdout, dest)
    elif kind == "archive":
        cached = __salt__["cp.cache_file"](spec["url"])
        if not cached:
            raise CommandExecutionError(f"{spec['url']}: could not be fetched")
        with open(cached, "rb") as fh:
            data = fh.read()
        got = hashlib.sha256(data).hexdigest()
        if got != spec["sha256"].lower():
            raise CommandExecutionError(f"{spec['url']}: sha256 is {got}, expected {spec['sha256']}")
        _safe_extract(data, dest, strip=int(spec.get("strip_components", 0)))
    else:
        files = _tree_files(spec["url"])
        if _tree_digest(files)[:ID_LENGTH] != release_id:
            raise CommandExecutionError(f"{spec['url']} changed during the run")
        for rel, path in files.items():
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)


# -- releases -------------------------------------------------------------------------------------

def _releases_dir(base_dir):
    return os.path.join(base_dir, "releases")


def current(base_dir):
    """The id of the release ``current`` points at, or None."""
    link = os.path.join(base_dir, "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def releases(base_dir):
    """Complete releases, newest first: id -> their RELEASE.json."""
    out = {}
    root = _releases_dir(base_dir)
    if not os.path.isdir(root):
        return out
    for name in sorted(os.listdir(root), key=lambda n: -os.path.getmtime(os.path.join(root, n))):
        meta = os.path.join(root, name, "RELEASE.json")
        if _ID.match(name) and os.path.isfile(meta):
            with open(meta, encoding="utf-8") as fh:
                out[name] = json.load(fh)
    return out


def failure(base_dir, release_id):
    """Why ``release_id`` was refused before, or None."""
    path = os.path.join(base_dir, "failed", release_id)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip() or "refused"


def _mark_failed(base_dir, release_id, reason):
    folder = os.path.join(base_dir, "failed")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    with open(os.path.join(folder, release_id), "w", encoding="utf-8") as fh:
        fh.write(reason[-2000:] + "\n")


def go_env(go, build, base_dir):
    """The build's whole environment: the pinned toolchain first on PATH, GOPATH mode over the
    Debian-packaged libraries (or module mode from vendor/), no network, no cgo."""
    modules = bool(build.get("modules"))
    return {
        "PATH": f"{go['root']}/bin:/usr/bin:/bin",
        "HOME": os.path.join(base_dir, "cache"),
        "GOCACHE": os.path.join(base_dir, "cache", "go-build"),
        "GOPATH": ":".join(build.get("gopath") or []) or os.path.join(base_dir, "cache", "gopath"),
        "GO111MODULE": "on" if modules else "off",
        "GOFLAGS": "-mod=vendor" if modules else "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "LC_ALL": "C",
    }


def toolchain(go, build, base_dir):
    """``go version`` of the pinned toolchain; fails unless it is ``go['version']``."""
    cp = _run([f"{go['root']}/bin/go", "version"], env=go_env(go, build, base_dir))
    out = _text(cp.stdout).strip()
    if cp.returncode != 0:
        raise CommandExecutionError(f"{go['root']}/bin/go version: {_text(cp.stderr).strip() or 'failed'}")
    found = out.split()[2] if len(out.split()) > 2 else out
    if found != go["version"]:
        raise CommandExecutionError(f"the Go toolchain at {go['root']} is {found}, expected the pinned {go['version']}")
    return found


def build(name, source, release_id, base_dir, go, build, binary):
    """Fetch ``source`` at ``release_id`` and build it into ``releases/<release_id>``. A build that
    fails leaves no release behind and raises with the compiler's last lines."""
    kind, spec = _kind(source)
    version = toolchain(go, build, base_dir)
    final = os.path.join(_releases_dir(base_dir), release_id)
    work = os.path.join(base_dir, "build", release_id)
    staging = final + ".new"
    for path in (work, staging):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(work, mode=0o700)
    os.makedirs(os.path.join(staging, "bin"), mode=0o755)
    os.makedirs(os.path.join(base_dir, "cache"), mode=0o700, exist_ok=True)
    try:
        _fetch_into(kind, spec, base_dir, release_id, work)
        pkg_dir = os.path.join(work, spec.get("subdir") or "")
        started = time.monotonic()
        cp = _run([f"{go['root']}/bin/go", "build", "-trimpath", "-ldflags", f"-X main.version={release_id}",
                   "-o", os.path.join(staging, "bin", binary), build.get("package") or "."],
                  env=go_env(go, build, base_dir), cwd=pkg_dir, timeout=int(build.get("timeout", 900)))
        if cp.returncode != 0:
            raise CommandExecutionError(f"go build failed: {_text(cp.stderr).strip()[-1500:]}")
        meta = {"id": release_id, "service": name, "source": describe(source), "go": version,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - started, 1)}
        with open(os.path.join(staging, "RELEASE.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def switch(base_dir, release_id):
    """Point ``current`` at ``release_id`` atomically (a new link renamed over the old one)."""
    target = os.path.join("releases", release_id)
    if not os.path.isdir(os.path.join(base_dir, target)):
        raise CommandExecutionError(f"release {release_id} is not in {_releases_dir(base_dir)}")
    tmp = os.path.join(base_dir, ".current.new")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, os.path.join(base_dir, "current"))


def restart(unit):
    cp = _run(["systemctl", "restart", unit], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    if cp.returncode != 0:
        raise CommandExecutionError(f"systemctl restart {unit}: {_text(cp.stderr).strip()}")


def health(url, timeout=60, interval=1.0):
    """Poll ``url`` until it answers 200, for at most ``timeout`` seconds: (healthy, what it said last)."""
    deadline = time.monotonic() + float(timeout)
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (the role's own http URL)
                body = resp.read(300).decode("utf-8", "replace").strip()
                if resp.status == 200:
                    return True, f"200 {body}"
                last = f"{resp.status} {body}"
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read(300).decode('utf-8', 'replace').strip()}"
        except (urllib.error.URLError, OSError) as exc:
            last = f"no answer ({getattr(exc, 'reason', exc)})"
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


def prune(base_dir, keep, protect=()):
    """Remove complete releases beyond the ``keep`` newest, never one in ``protect``; returns the ids removed."""
    removed = []
    for index, release_id in enumerate(releases(base_dir)):
        if index >= keep and release_id not in protect:
            shutil.rmtree(os.path.join(_releases_dir(base_dir), release_id))
            removed.append(release_id)
    return removed


def deploy(name, source, release_id, base_dir, unit, health_url, go, build_spec, binary, health_timeout=60,
           keep=3):
    """Build ``release_id``, switch to it, restart ``unit`` and wait for ``health_url``. A release that
    does not build, or is not healthy in ``health_timeout`` seconds, is recorded as failed; after a
    failed health check ``current`` goes back to the previous release, which is restarted and checked.
    Returns what happened; raises with what happened when the release was refused."""
    previous = current(base_dir)
    try:
        # A release still kept (the one before last, say) is switched back to without a rebuild.
        kept = releases(base_dir).get(release_id)
        meta = kept or build(name, source, release_id, base_dir, go, build_spec, binary)
    except CommandExecutionError as exc:
        if "go build failed" in str(exc):
            _mark_failed(base_dir, release_id, str(exc))
        serving = f"release {previous} still serves" if previous else "nothing was deployed"
        raise CommandExecutionError(
            f"release {release_id} ({describe(source)}) was not built: {exc}; {serving}") from exc
    switch(base_dir, release_id)
    restart(unit)
    ok, said = health(health_url, health_timeout)
    if ok:
        removed = prune(base_dir, keep, protect=(release_id, previous))
        return {"release": release_id, "previous": previous, "build": meta, "reused": bool(kept), "health": said,
                "pruned": removed}
    _mark_failed(base_dir, release_id, f"health check: {said}")
    if not previous:
        raise CommandExecutionError(f"release {release_id} ({describe(source)}) failed its health check "
                                    f"({health_url}: {said}) and there is no previous release to roll back to")
    switch(base_dir, previous)
    restart(unit)
    back, said_back = health(health_url, health_timeout)
    state = "serves again" if back else f"is not healthy either ({said_back})"
    raise CommandExecutionError(f"release {release_id} ({describe(source)}) failed its health check "
                                f"({health_url}: {said}); rolled back to release {previous}, which {state}")
