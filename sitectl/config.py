"""Render the checkout's Salt configuration (etc/*.j2) into a state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jinja2

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

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "etc"


def write_config(settings: SaltSettings, root: Path = ROOT) -> Path:
    """Write master, minion (masterless) and the cloud profile link; return the config dir."""
    if not (root / "pillar" / "site" / f"{settings.site}.sls").is_file():
        raise FileNotFoundError(f"no site named {settings.site!r}: expected pillar/site/{settings.site}.sls")
    if settings.overlay and not (root / "pillar" / "overlays" / f"{settings.overlay}.sls").is_file():
        raise FileNotFoundError(f"no overlay {settings.overlay!r}: expected pillar/overlays/{settings.overlay}.sls")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root / "etc")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    context = {**settings.__dict__, "root": str(root), "state_dir": str(settings.state_dir)}
    conf = settings.config_dir
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("pki/master", "pki/local", "cache", "run/master", "run/local", "log"):
        (settings.state_dir / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(settings.state_dir / "pki", 0o700)
    for name in ("master", "minion", "cloud"):
        (conf / name).write_text(env.get_template(f"{name}.j2").render(context))
    providers = conf / "cloud.providers.d"
    providers.mkdir(exist_ok=True)
    for old in providers.glob("*.conf"):
        old.unlink()
    if settings.provider:
        text = env.get_template(f"providers/{settings.provider}.conf.j2").render(context)
        (providers / "platform.conf").write_text(text)
    profiles = conf / "cloud.profiles.d"
    if profiles.is_symlink() or profiles.exists():
        profiles.unlink()
    profiles.symlink_to(root / "cloud.profiles.d")
    return conf
