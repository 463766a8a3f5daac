"""Render the checkout's Salt configuration (etc/*.j2) into a state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from sitectl import ROOT


@dataclass
class SaltSettings:
    state_dir: Path = ROOT / ".salt"
    site: str = "example"
    overlay: str | None = None
    interface: str = "127.0.0.1"
    publish_port: int = 4505
    ret_port: int = 4506
    master_id: str = "control"
    provider: str | None = None  # etc/providers/<provider>.conf.j2: the `platform` cloud provider
    lab_dir: str = "/var/lib/sitectl-lab"
    bridge: str = "sitelab0"
    # Options of the proxmox provider (etc/providers/proxmox.conf.j2) over those the site gives
    # (site.proxmox: api, node, verify_ssl, ca_bundle, token_id): url, token_secret_env, bootstrap, ...
    proxmox: dict = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "etc"


def write_config(settings: SaltSettings, root: Path = ROOT) -> Path:
    """Write master, minion (masterless) and the cloud profile link; return the config dir."""
    if not (root / "pillar" / "site" / f"{settings.site}.sls").is_file():
        raise FileNotFoundError(f"no site named {settings.site!r}: expected pillar/site/{settings.site}.sls")
    if settings.overlay and not (root / "pillar" / "overlays" / f"{settings.overlay}.sls").is_file():
        raise FileNotFoundError(f"no overlay {settings.overlay!r}: expected pillar/overlays/{settings.overlay}.sls")
    conf = settings.config_dir
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("pki/master", "pki/local", "cache", "run/master", "run/local", "log"):
        (settings.state_dir / sub).mkdir(parents=True, exist_ok=True)
    # Keys, the job cache (every job's return) and the logs are root's only.
    for private in ("pki", "cache", "log"):
        os.chmod(settings.state_dir / private, 0o700)
    for name, text in render_config(settings, root).items():
        if name == "cloud.providers.d/platform.conf":
            continue
        (conf / name).write_text(text)
    providers = conf / "cloud.providers.d"
    providers.mkdir(exist_ok=True)
    for old in providers.glob("*.conf"):
        old.unlink()
    if settings.provider:
        (providers / "platform.conf").write_text(render_config(settings, root)["cloud.providers.d/platform.conf"])
    profiles = conf / "cloud.profiles.d"
    if profiles.is_symlink() or profiles.exists():
        profiles.unlink()
    profiles.symlink_to(root / "cloud.profiles.d")
    return conf


def render_config(settings: SaltSettings, root: Path = ROOT) -> dict[str, str]:
    """The files of the config dir, rendered: master, minion, cloud and the provider (relative path -> text)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root / "etc")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    context = {**settings.__dict__, "root": str(root), "state_dir": str(settings.state_dir)}
    if settings.provider == "proxmox":
        context["proxmox"] = proxmox_options(settings, root)
    out = {name: env.get_template(f"{name}.j2").render(context) for name in ("master", "minion", "cloud")}
    if settings.provider:
        provider = env.get_template(f"providers/{settings.provider}.conf.j2")
        out["cloud.providers.d/platform.conf"] = provider.render(context)
    return out


def config_differs(settings: SaltSettings, root: Path = ROOT) -> list[str]:
    """The files of the config dir that are missing or differ from what the templates render now."""
    conf = settings.config_dir
    return [name for name, text in render_config(settings, root).items()
            if not (conf / name).is_file() or (conf / name).read_text() != text]


PROXMOX_DEFAULTS = {
    "token_secret_env": "PVE_TOKEN_SECRET",
    "token_secret": None,
    "verify_ssl": True,
    "ca_bundle": None,
    "bootstrap": "official",
    "timeout": 30,
    "retries": 3,
    "backoff": 1.0,
    "task_timeout": 600,
}


def proxmox_options(settings: SaltSettings, root: Path = ROOT) -> dict:
    """The proxmox provider's options: defaults, then the site's `proxmox` section, then ``settings.proxmox``."""
    options = dict(PROXMOX_DEFAULTS)
    try:
        data = yaml.safe_load((root / "pillar" / "site" / f"{settings.site}.sls").read_text()) or {}
        site = (data.get("site") or {}).get("proxmox") or {}
    except (OSError, yaml.YAMLError, AttributeError):  # a site written with Jinja: give the options explicitly
        site = {}
    for key, ours in (("api", "url"), ("node", "node"), ("token_id", "token_id"), ("verify_ssl", "verify_ssl"),
                      ("ca_bundle", "ca_bundle")):
        if key in site:
            options[ours] = site[key]
    options.update({k: v for k, v in settings.proxmox.items() if v is not None})
    missing = [k for k in ("url", "token_id") if not options.get(k)]
    if missing:
        raise ValueError(f"the proxmox provider needs {', '.join(missing)}: set site.proxmox (api, token_id) or "
                         f"pass --proxmox url=... token_id=...")
    if options.get("token_secret") and not str(options["token_secret"]).startswith("sdb://"):
        raise ValueError("token_secret: only an sdb:// URI may be written into the provider config; the secret "
                         "itself goes into the environment variable named by token_secret_env")
    return options
