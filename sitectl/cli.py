"""sitectl: configure the checkout's Salt master and check the site before anything runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config


def _settings(args) -> SaltSettings:
    return SaltSettings(
        state_dir=Path(args.state_dir).resolve(),
        site=args.site,
        overlay=args.overlay,
        interface=getattr(args, "interface", "127.0.0.1"),
        provider=getattr(args, "provider", None),
        proxmox=_options(getattr(args, "proxmox", None) or []),
    )


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; the value is read as YAML (true, 30, 0.5 keep their types)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"sitectl: --proxmox {pair!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value) if value else None
    return out


def cmd_master_config(args) -> int:
    if args.check:  # the salt_master role's `unless`: exit 0 when the rendered files are what is there
        from sitectl.config import config_differs

        differs = config_differs(_settings(args))
        for name in differs:
            print(f"differs: {name}")
        return 1 if differs else 0
    try:
        conf = write_config(_settings(args))
    except ValueError as exc:
        print(f"sitectl: {exc}", file=sys.stderr)
        return 2
    provider = f", cloud provider {args.provider}" if args.provider else ""
    print(f"wrote {conf}/master and {conf}/minion (site {args.site}, overlay {args.overlay or 'none'}{provider})")
    return 0


def cmd_validate(args) -> int:
    return validate_config(write_config(_settings(args)), args.site)


def validate_config(conf: Path, site: str) -> int:
    """Compile a pillar through the real ext_pillar with the master config in ``conf``; print the
    site's errors (each once, on stderr) or a summary."""
    from sitectl import render  # salt is slow to import

    data = render.pillar(conf, "sitectl-validate")
    errors = data.get("_errors", [])
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    guests = sorted(data["site"]["guests"])
    print(f"site {site!r} is valid: {len(guests)} guests ({', '.join(guests)})")
    return 0


def cmd_cloud_map(args) -> int:
    """The salt-cloud map of the site (profile -> guests), from the pillar the ext_pillar validated."""
    from sitectl import render, site

    conf = write_config(_settings(args))
    data = render.pillar(conf, "sitectl-validate")
    if data.get("_errors"):
        for error in data["_errors"]:
            print(error, file=sys.stderr)
        return 1
    yaml.safe_dump(site.cloud_map(data), sys.stdout, default_flow_style=False)
    return 0


def cmd_render(args) -> int:
    from sitectl import render

    conf = write_config(_settings(args))
    out = render.highstate(conf, args.guest) if not args.pillar else render.pillar(conf, args.guest)
    json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return 0 if isinstance(out, dict) and "_errors" not in out else 1


def cmd_lab(args) -> int:
    from sitectl import labctl

    if args.action in ("shell", "apply") and not args.guest:
        raise SystemExit(f"sitectl lab {args.action} needs a guest name")
    if args.action == "up":
        return labctl.up(args.site)
    if args.action == "down":
        return labctl.down(args.site)
    if args.action == "status":
        return labctl.status(args.site)
    if args.action == "shell":
        return labctl.shell(args.guest)
    return labctl.apply(args.guest, args.site)


def cmd_deploy(args) -> int:
    """The deploy job (.gitlab-ci.yml): move the checkout to the pushed commit, a test=True highstate,
    then the highstate (sitectl/deploy.py)."""
    from sitectl import deploy

    config_dir = Path(args.state_dir).resolve() / "etc"
    job = deploy.Deploy(checkout=Path(args.checkout).resolve(), config_dir=config_dir,
                        master_config=Path(args.master_config) if args.master_config else None,
                        restart_master=args.restart_master.split() if args.restart_master else [],
                        timeout=args.timeout)
    artifacts = Path(args.artifacts) if args.artifacts else None
    return deploy.run(job, args.commit, artifacts)


def cmd_provision(args) -> int:
    """The manual provision job: salt-cloud -m of the site's guests that do not exist yet."""
    from sitectl import deploy

    job = deploy.Deploy(checkout=Path(args.checkout).resolve(), config_dir=Path(args.state_dir).resolve() / "etc",
                        master_config=Path(args.master_config) if args.master_config else None)
    return deploy.provision(job, args.commit, Path(args.salt_cloud) if args.salt_cloud else None)


def cmd_bootstrap(args) -> int:
    """From a bare Proxmox to a running control node (sitectl/bootstrap.py)."""
    from sitectl import bootstrap

    boot = bootstrap.Bootstrap(site=args.site, state_dir=Path(args.state_dir).resolve(),
                               proxmox=_options(args.proxmox or []), ssh=args.ssh, repo_url=args.repo_url)
    return bootstrap.run(boot, converge=not args.create_only)


def cmd_drill(args) -> int:
    from sitectl import drill

    return drill.drill(args.guest, args.site)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sitectl", description=__doc__)
    parser.add_argument("--state-dir", default=str(ROOT / ".salt"), help="where the master's files live")
    parser.add_argument("--site", default="example", help="the site: pillar/site/<SITE>.sls")
    parser.add_argument("--overlay", default=None, help="an overlay: pillar/overlays/<OVERLAY>.sls")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("master-config", help="render etc/*.j2 into <state-dir>/etc (the Saltfile points there)")
    p.add_argument("--interface", default="127.0.0.1", help="the address the master listens on")
    p.add_argument("--provider", default=None, choices=["proxmox", "lab"],
                   help="the salt-cloud provider `platform`: etc/providers/<PROVIDER>.conf.j2")
    p.add_argument("--proxmox", action="append", metavar="KEY=VALUE",
                   help="a proxmox provider option over site.proxmox (url, token_id, token_secret_env, ca_bundle, "
                        "bootstrap, ...); repeatable")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a rendered file would change")
    p.set_defaults(func=cmd_master_config)
    p = sub.add_parser("validate", help="check the site, the role catalog and the roles' pillar")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("cloud-map", help="print the site's salt-cloud map (salt-cloud -m <(sitectl cloud-map) -P)")
    p.set_defaults(func=cmd_cloud_map)
    p = sub.add_parser("render", help="print a guest's compiled highstate (or --pillar)")
    p.add_argument("guest")
    p.add_argument("--pillar", action="store_true")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("deploy", help="the CI deploy: checkout to --commit, test=True highstate, highstate")
    p.add_argument("--commit", required=True, help="the pushed commit of main (CI_COMMIT_SHA)")
    p.add_argument("--checkout", default=str(ROOT), help="the control node's checkout (default: this one)")
    p.add_argument("--artifacts", default=None, help="a folder for highstate-test.json and highstate.json")
    p.add_argument("--master-config", default=None, help="the master's config file (default: <state-dir>/etc/master)")
    p.add_argument("--restart-master", default="systemctl restart salt-master",
                   help="the command that restarts the master when its own code changed ('' for none)")
    p.add_argument("--timeout", type=int, default=60,
                   help="seconds before a silent minion is asked whether it still runs the highstate")
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("provision", help="the CI provision job: create the site's guests that do not exist yet")
    p.add_argument("--commit", required=True, help="the pushed commit of main (CI_COMMIT_SHA)")
    p.add_argument("--checkout", default=str(ROOT), help="the control node's checkout (default: this one)")
    p.add_argument("--master-config", default=None, help="the master's config file (default: <state-dir>/etc/master)")
    p.add_argument("--salt-cloud", default=None, help="the salt-cloud command (default: the one beside this Python)")
    p.set_defaults(func=cmd_provision)
    p = sub.add_parser("bootstrap", help="create the control node on Proxmox and start its master (idempotent)")
    p.add_argument("--proxmox", action="append", metavar="KEY=VALUE",
                   help="a proxmox provider option over site.proxmox (url, ca_bundle, ...); repeatable")
    p.add_argument("--ssh", default="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new root@{ip}",
                   help="how to reach the new guest as root ({ip} is its address)")
    p.add_argument("--repo-url", default=None, help="the owner's repository as the control node fetches it "
                                                    "(default: this checkout's origin)")
    p.add_argument("--create-only", action="store_true", help="stop once the guest exists and runs")
    p.set_defaults(func=cmd_bootstrap)
    p = sub.add_parser("lab", help="the site in LXC guests on this machine: up, down, status, shell, apply")
    p.add_argument("action", choices=["up", "down", "status", "shell", "apply"])
    p.add_argument("guest", nargs="?")
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("drill", help="disaster-recovery drill: destroy a stateful guest of the lab, recreate, "
                                     "restore its latest backup, check the data, print the recovery time")
    p.add_argument("--guest", required=True, help="the guest to lose (its role: postgresql, vault or rabbitmq)")
    p.set_defaults(func=cmd_drill)
    return parser


def _quiet_salt() -> None:
    """Salt's own log records (its traceback of a refused ext_pillar, its "Pillar render error") would
    reach stderr through Python's last-resort handler; the commands print the site's errors once."""
    salt_logger = logging.getLogger("salt")
    salt_logger.addHandler(logging.NullHandler())
    salt_logger.propagate = False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("lab", "drill"):
        _quiet_salt()
    try:
        return args.func(args)
    except FileNotFoundError as exc:
        print(f"sitectl: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
