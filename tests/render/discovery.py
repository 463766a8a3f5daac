"""What the render tier renders, found in the tree rather than listed: every SLS under salt/, every
``files/*.j2`` template, every reactor, and every guest of every site (the example site and each
valid fixture site, with and without the lab overlay where the overlay fits the site).

A guest is rendered as it would render itself: one masterless ``salt.client.Caller`` per guest
(sitectl.render.caller), which compiles that guest's pillar once; its highstate, every SLS of the
tree and the templates its states manage are all rendered through that one caller.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import salt.fileclient
import salt.utils.templates
import yaml
from salt.exceptions import SaltException

from sitectl import ROOT, render
from tests.conftest import SITES, load_site, make_checkout, state_args

SALT = ROOT / "salt"
REACTORS = ROOT / "reactor"
OVERLAYS = ROOT / "pillar" / "overlays"

# Checked by tests/reverse_proxy/test_render.py, in every shape the configuration takes (with and without
# certificates, with and without an OCSP responder), against certificates it makes for the check;
# nginx-check-tls checks a candidate with the guest's live nginx.conf, which that test renders.
CHECKED_ELSEWHERE = {"nginx", "nginx-check-tls"}

# A program a role's check script runs by absolute path (not a glob, not a data path such as
# /var/lib/...): the script is run here only if all of them are installed here, as on the guest
# after its packages (a fresh CI machine has neither PostgreSQL nor RabbitMQ).
PROGRAM_PATH = re.compile(r"(?<![\w/$])/(?:usr|bin|sbin|opt)/[\w./+-]++(?!\*)")


def sls_names() -> list[str]:
    """Every SLS of the state tree by its dotted name (``role/init.sls`` is ``role``); not the top file."""
    names = []
    for path in sorted(SALT.rglob("*.sls")):
        parts = path.relative_to(SALT).with_suffix("").parts
        if parts == ("top",):
            continue
        if parts[-1] == "init":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def template_urls() -> list[str]:
    """Every Jinja template a role ships, as the salt:// URL a state names it by."""
    return [f"salt://{path.relative_to(SALT).as_posix()}" for path in sorted(SALT.rglob("files/*.j2"))]


def reactor_files() -> list[Path]:
    return sorted(REACTORS.glob("*.sls"))


def overlay_guests(overlay: str) -> set[str]:
    with (OVERLAYS / f"{overlay}.sls").open() as fh:
        return set(((yaml.safe_load(fh) or {}).get("site") or {}).get("guests") or {})


@dataclass(frozen=True)
class Case:
    """One site, optionally seen through a pillar overlay: what a master would compile."""

    label: str
    site_file: Path
    overlay: str | None = None

    @property
    def name(self) -> str:
        return f"{self.label}+{self.overlay}" if self.overlay else self.label

    @cached_property
    def guests(self) -> list[str]:
        return list(load_site(self.site_file)["guests"])


def cases() -> list[Case]:
    """The example site and every valid fixture site; each also with the lab overlay when the overlay
    readdresses guests the site has (the lab overlay is written for the example site: on another site
    it would describe guests that do not exist, which the site validation rightly refuses)."""
    sites = [Case("example", ROOT / "pillar" / "site" / "example.sls")]
    sites += [Case(folder.name, folder / "site.sls") for folder in sorted((SITES / "valid").iterdir())]
    out = []
    for case in sites:
        out.append(case)
        if overlay_guests("lab") <= set(case.guests):
            out.append(Case(case.label, case.site_file, "lab"))
    return out


class GuestRender:
    """One guest of one case, rendered once and kept: its caller (and so its compiled pillar), its
    highstate, and every SLS of the tree as that guest renders it."""

    def __init__(self, config_dir: Path, guest: str, overrides: dict):
        self.guest = guest
        # As salt-call: its state functions start from the pillar the caller compiled, instead of
        # compiling it again for every call.
        self.caller = render.caller(config_dir, guest, overrides={**overrides, "__cli": "salt-call"})
        # One file client for the guest's templates, as a state run has one (salt.state.State).
        self.files = salt.fileclient.get_file_client(self.caller.opts)
        self.secrets_generated = False

    @cached_property
    def highstate(self) -> dict | list:
        return self.caller.cmd("state.show_highstate")

    @cached_property
    def every_sls(self) -> dict | list:
        """The whole tree rendered in one pass (one compile instead of one per SLS)."""
        return self.caller.cmd("state.show_sls", ",".join(sls_names()))

    def failing_sls(self) -> dict[str, list]:
        """Each SLS rendered alone, for naming the ones that fail when the whole tree does."""
        out = {}
        for sls in sls_names():
            result = self.caller.cmd("state.show_sls", sls)
            if not isinstance(result, dict):
                out[sls] = result
        return out

    def generate_declared_secrets(self) -> None:
        """Run the guest's own ``vault_server.secret_generated`` states (once), as its highstate does
        before the files that read those secrets are rendered."""
        if self.secrets_generated:
            return
        for state_id, state in self.highstate.items():
            if "vault_server" not in state:
                continue
            args = state_args(state, "vault_server")
            if args["__fun__"] != "secret_generated":
                continue
            kwargs = {k: v for k, v in args.items() if k in ("fields", "mount", "url", "verify")}
            ret = self.caller.cmd("state.single", "vault_server.secret_generated", args.get("name", state_id),
                                  **kwargs)
            results = list(ret.values()) if isinstance(ret, dict) else [{"result": False, "comment": ret}]
            assert all(r["result"] for r in results), f"{self.guest}: {state_id}: {results}"
        self.secrets_generated = True


@dataclass
class ManagedFile:
    """One file a state of a compiled highstate manages (one entry of its ``names``, if it has them)."""

    state_id: str
    name: str
    args: dict

    @property
    def sources(self) -> list:
        source = self.args.get("source")
        return source if isinstance(source, list) else [source]


def file_states(high: dict) -> list[ManagedFile]:
    """Every file a ``file`` state of ``high`` manages, with ``names`` expanded as Salt expands them
    (each name may override the state's arguments)."""
    found = []
    for state_id, state in high.items():
        if "file" not in state:
            continue
        args = state_args(state, "file")
        for entry in args.get("names") or [args.get("name", state_id)]:
            name, own = entry, {}
            if isinstance(entry, dict):
                name, overrides = next(iter(entry.items()))
                for item in overrides or []:
                    own.update(item)
            found.append(ManagedFile(state_id, name, {**args, **own}))
    return found


def managing_states(high: dict, url: str) -> list[ManagedFile]:
    """The files of ``high`` whose source is (or falls back to) ``url``."""
    return [ManagedFile(m.state_id, m.name, {**m.args, "source": url}) for m in file_states(high) if url in m.sources]


def render_managed(rendered: GuestRender, managed: ManagedFile) -> str:
    """The file as ``file.managed`` renders it: the template fetched from the file server and given to
    the state's template engine with what ``file.get_managed`` gives it (the state's defaults updated
    by its context, the guest's execution modules, pillar and grains)."""
    args = managed.args
    saltenv = args.get("saltenv", "base")
    engine = salt.utils.templates.TEMPLATE_REGISTRY[args["template"]]
    source = rendered.files.cache_file(args["source"], saltenv)
    assert source, f"{managed.state_id}: {args['source']} is not on the file server"
    functions = rendered.caller.sminion.functions
    context = {**(args.get("defaults") or {}), **(args.get("context") or {})}
    try:
        result = engine(source, name=managed.name, source=args["source"], user=args.get("user"),
                        group=args.get("group"), mode=args.get("mode"), attrs=args.get("attrs"), saltenv=saltenv,
                        context=context, salt=functions.pack["__salt__"], pillar=functions.pack["__pillar__"],
                        grains=rendered.caller.opts["grains"], opts=rendered.caller.opts, to_str=True)
    except SaltException as exc:
        raise AssertionError(f"{managed.state_id}: {exc}") from None
    assert result["result"], f"{managed.state_id}: {result['data']}"
    return result["data"]


def shipped_file(rendered: GuestRender, path: str) -> str | None:
    """The content the guest's highstate gives the file at ``path`` (rendered if it is a template),
    or None when the highstate does not manage it."""
    for managed in file_states(rendered.highstate):
        if managed.name == path and managed.args.get("source"):
            if managed.args.get("template"):
                return render_managed(rendered, managed)
            return Path(rendered.files.cache_file(managed.sources[0], managed.args.get("saltenv", "base"))).read_text()
    return None


def checker(rendered: GuestRender, check_cmd: str, workdir: Path) -> list[str] | None:
    """The state's ``check_cmd`` as it can run on this machine: its program from here, or, when the
    guest's own highstate installs that program (a check script of the role) and what the script runs
    is installed here, the tree's copy of it. None when it cannot run here, or when another test runs
    that checker."""
    program, *arguments = shlex.split(check_cmd)
    if Path(program).name in CHECKED_ELSEWHERE:
        return None
    if shutil.which(program):
        return [program, *arguments]
    script = shipped_file(rendered, program)
    if script is None or not all(Path(path).exists() for path in PROGRAM_PATH.findall(script)):
        return None
    copy = workdir / Path(program).name
    copy.write_text(script)
    copy.chmod(0o755)
    return [str(copy), *arguments]


def check_rendered(rendered: GuestRender, managed: ManagedFile, text: str, workdir: Path) -> list[str]:
    """Run the checks this machine has for a rendered file: the state's own ``check_cmd`` (see
    ``checker``) and the shell's syntax check for a shell script. Returns the failures."""
    path = workdir / "rendered" / Path(managed.name).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    commands = []
    if managed.args.get("check_cmd"):
        command = checker(rendered, managed.args["check_cmd"], workdir)
        if command:
            commands.append([*command, str(path)])
    shebang = re.match(r"#!\s*(\S+)", text)
    if shebang and Path(shebang[1]).name in ("sh", "bash") and shutil.which(shebang[1]):
        commands.append([shebang[1], "-n", str(path)])
    failures = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            failures.append(f"{managed.state_id} ({managed.name}): `{shlex.join(command)}` failed:\n"
                            f"{result.stdout}{result.stderr}")
    return failures


def checkout_for(case: Case, base: Path) -> Path:
    """A checkout with the case's site (and overlay); returns its Salt config dir."""
    site_name = "example" if case.label == "example" else "fixture"
    _, conf = make_checkout(base, case.site_file, site_name=site_name, overlay=case.overlay)
    return conf
