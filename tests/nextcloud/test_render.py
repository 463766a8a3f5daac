"""The nextcloud role rendered for the example site and the lab overlay with Salt's own compiler (no
daemon): the guest's nginx.conf checked by the real `nginx -t`, PHP's limits from the route, the pool
from the guest's memory, Redis on its socket, the cron timer, the parts the lab switches off, and the
proxy's route to Nextcloud (redirects, headers, uploads) checked by `nginx -t` as the proxy renders it."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml
from salt.exceptions import CommandExecutionError

from sitectl import ROOT, render, roles, site
from tests.conftest import guest_with_role, load_site, state_args
from tests.reverse_proxy.test_render import make_cert, nginx_binary, nginx_check, nginx_conf

pytestmark = pytest.mark.render

GUEST = guest_with_role(load_site(), "nextcloud")
PROXY = guest_with_role(load_site(), "reverse_proxy")
HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN",
           "X-Permitted-Cross-Domain-Policies": "none", "X-Robots-Tag": "noindex, nofollow",
           "X-XSS-Protection": "1; mode=block"}


def show(config, guest=GUEST, sls="nextcloud", pillar=None):
    return render.caller(config, guest).cmd("state.show_sls", sls, pillar=pillar)


@pytest.fixture(scope="module")
def high(example_config) -> dict:
    compiled = show(example_config)
    assert isinstance(compiled, dict), compiled
    return compiled


@pytest.fixture(scope="module")
def lab_config(tmp_path_factory):
    from sitectl.config import SaltSettings, write_config

    return write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("nc-lab-state"), overlay="lab"))


def rendered(config, high: dict, state_id: str, name: str | None = None) -> str:
    """The file a state manages, rendered with the context it passes (one of its ``names``)."""
    args = state_args(high[state_id], "file")
    context = dict(args.get("defaults") or {})
    context.update(args.get("context") or {})
    for entry in args.get("names") or []:
        if isinstance(entry, dict) and name in entry:
            for item in entry[name]:
                context.update(item.get("context", {}))
    caller = render.caller(config, GUEST)
    with open(caller.cmd("cp.cache_file", args["source"])) as fh:
        return caller.cmd("file.apply_template_on_contents", fh.read(), "jinja", context, None, "base")


def test_nginx_in_the_guest_has_nextclouds_rules_and_nginx_accepts_it(example_config, high, tmp_path):
    conf = state_args(high["nextcloud-nginx-config-managed"], "file")
    assert conf["name"] == "/etc/nginx/nginx.conf" and conf["check_cmd"] == "/usr/sbin/nginx -t -q -c"
    assert state_args(high["nextcloud-nginx-running"], "unit")["reload"] is True
    text = rendered(example_config, high, "nextcloud-nginx-config-managed")
    for line in ("listen 80 default_server;", "server_name nextcloud.your-domain.com;", "root /var/www/nextcloud;",
                 "absolute_redirect off;", "client_max_body_size 16G;", "fastcgi_read_timeout 3600s;",
                 "server unix:/run/php/php8.2-fpm-nextcloud.sock;", "fastcgi_hide_header X-Powered-By;",
                 "location = /.well-known/carddav { return 301 /remote.php/dav/; }",
                 "location = /.well-known/caldav { return 301 /remote.php/dav/; }",
                 "location ~ ^/(?:build|tests|config|lib|3rdparty|templates|data)(?:$|/) { return 404; }",
                 "location ~ ^/(?:\\.|autotest|occ|issue|indie|db_|console) { return 404; }",
                 "fastcgi_param HTTPS on;", "fastcgi_request_buffering off;"):
        assert line in [x.strip() for x in text.splitlines()], line
    for header, value in HEADERS.items():
        assert text.count(f'add_header {header} "{value}" always;') == 2, "the server's and the assets' location"
    (tmp_path / "nginx.conf").write_text(text)
    checked = subprocess.run([nginx_binary(), "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_php_limits_match_the_route_and_opcache_and_apcu_are_on(example_config, high):
    fpm = rendered(example_config, high, "nextcloud-php-ini-managed", "/etc/php/8.2/fpm/conf.d/90-nextcloud.ini")
    cli = rendered(example_config, high, "nextcloud-php-ini-managed", "/etc/php/8.2/cli/conf.d/90-nextcloud.ini")
    for line in ("upload_max_filesize = 16G", "post_max_size = 16G", "max_execution_time = 3600",
                 "max_input_time = 3600", "memory_limit = 512M", "opcache.enable = 1", "opcache.save_comments = 1",
                 "opcache.interned_strings_buffer = 16", "apc.enable_cli = 1", "date.timezone = Europe/Moscow"):
        assert line in fpm.splitlines() and line in cli.splitlines(), line
    assert "opcache.enable_cli = 0" in fpm.splitlines() and "opcache.enable_cli = 1" in cli.splitlines()


def test_the_pool_is_sized_from_the_guests_memory_and_checked_before_it_goes_live(example_config, high,
                                                                                example_site):
    assert example_site["guests"][GUEST]["memory"] == 4096
    pool = state_args(high["nextcloud-php-fpm-pool-managed"], "file")
    assert pool["check_cmd"] == "/usr/local/sbin/nextcloud-fpm-check"
    text = rendered(example_config, high, "nextcloud-php-fpm-pool-managed")
    for line in ("[nextcloud]", "user = nextcloud", "listen = /run/php/php8.2-fpm-nextcloud.sock",
                 "listen.owner = www-data", "listen.mode = 0660", "pm.max_children = 32", "pm.start_servers = 8",
                 "pm.min_spare_servers = 4", "pm.max_spare_servers = 16", "request_terminate_timeout = 3600s",
                 "env[PATH] = /usr/local/bin:/usr/bin:/bin", "ping.path = /fpm-ping"):
        assert line in text.splitlines(), line
    check = rendered(example_config, high, "nextcloud-php-fpm-check-managed")
    assert check.startswith("#!/bin/sh\n") and "exec /usr/sbin/php-fpm8.2 --test --fpm-config" in check
    small = show(example_config, pillar={"nextcloud": {"php": {"pool": {"child_mb": 256}}}})
    assert state_args(small["nextcloud-php-fpm-pool-managed"], "file")["context"]["pool"] == {
        "max_children": 8, "start_servers": 2, "min_spare_servers": 1, "max_spare_servers": 4, "max_requests": 500}
    assert state_args(high["nextcloud-php-fpm-www-pool-absent"], "file")["require"] == [
        {"file": "nextcloud-php-fpm-pool-managed"}], "Debian's pool goes only once ours is there"


def test_redis_listens_on_its_socket_only_and_the_timer_runs_cron_php(example_config, high):
    text = rendered(example_config, high, "nextcloud-redis-config-managed")
    for line in ("port 0", "unixsocket /run/redis/redis-server.sock", "unixsocketperm 770", 'save ""'):
        assert line in text.splitlines(), line
    assert state_args(high["nextcloud-user-present"], "user")["groups"] == ["redis"]
    service = state_args(high["nextcloud-cron-service-managed"], "file")["contents"]
    assert "ExecStart=/usr/bin/php8.2 -f /var/www/nextcloud/cron.php" in service and "User=nextcloud" in service
    assert "ConditionPathExists=/var/www/nextcloud/config/config.php" in service
    timer = state_args(high["nextcloud-cron-timer-managed"], "file")["contents"]
    assert "OnUnitActiveSec=5min" in timer and "WantedBy=timers.target" in timer
    data = state_args(high["nextcloud-data-dir-managed"], "file")
    assert data["name"] == "/srv/nextcloud-data" and data["mode"] == "0750" and data["user"] == "nextcloud"


def test_the_data_directory_is_made_only_on_its_mounted_volume(example_config, high):
    """The example site gives the Nextcloud guest a volume at the data directory (its mp0): the directory
    is made only when that volume is mounted, the check only reads."""
    mounted = state_args(high["nextcloud-data-volume-mounted"], "cmd")
    assert mounted["unless"] == "mountpoint -q /srv/nextcloud-data"
    assert "/srv/nextcloud-data is not a mount point" in mounted["name"] and "exit 1" in mounted["name"]
    assert {"cmd": "nextcloud-data-volume-mounted"} in state_args(high["nextcloud-data-dir-managed"], "file")["require"]
    assert [m["path"] for m in load_site()["guests"][GUEST]["mounts"]] == ["/srv/nextcloud-data"]


def test_a_data_directory_below_a_mount_waits_for_that_mount_and_none_without_one(example_config):
    below = show(example_config, pillar={"nextcloud": {"data_dir": "/srv/nextcloud-data/files"}})
    assert state_args(below["nextcloud-data-volume-mounted"], "cmd")["unless"] == "mountpoint -q /srv/nextcloud-data"
    assert state_args(below["nextcloud-data-dir-managed"], "file")["name"] == "/srv/nextcloud-data/files"
    without = show(example_config, pillar={"platform": {"guest": {"mounts": []}}})
    assert "nextcloud-data-volume-mounted" not in without
    assert {"cmd": "nextcloud-data-volume-mounted"} not in state_args(without["nextcloud-data-dir-managed"],
                                                                      "file")["require"]


def test_a_data_directory_inside_the_web_root_is_refused_before_anything_renders(example_config):
    with pytest.raises(CommandExecutionError) as refused:
        show(example_config, pillar={"nextcloud": {"data_dir": "/var/www/nextcloud/data"}})
    message = str(refused.value.info)
    assert "nextcloud.data_dir: /var/www/nextcloud/data and the web root nextcloud.root /var/www/nextcloud " \
           "overlap; expected the data directory outside the web root" in message


def test_the_download_is_proven_before_install_and_secrets_come_from_vault_at_run_time(high):
    fetch = state_args(high["nextcloud-release-present"], "nextcloud_occ")
    assert fetch["version"] == "31.0.9" and fetch["base_url"] == "https://download.nextcloud.com/server/releases"
    installed = state_args(high["nextcloud-installed"], "nextcloud_occ")
    assert {"nextcloud_occ": "nextcloud-release-present"} in installed["require"]
    assert installed["admin_password_path"] == "roles/nextcloud/admin"  # noqa: S105 (a Vault path)
    assert "admin_password" not in installed
    assert installed["database"]["password_path"] == "roles/postgresql/users/nextcloud"  # noqa: S105
    generated = state_args(high["nextcloud-admin-secret-generated"], "vault_server")
    assert generated["name"] == "roles/nextcloud/admin" and generated["fields"]["password"]["length"] >= 32
    office = state_args(high["nextcloud-collabora-service-options-managed"], "file")["contents"]
    assert "--o:ssl.enable=false --o:ssl.termination=true" in office and "--o:port=9980" in office
    assert "--o:storage.wopi.alias_groups.group[0].host=https://nextcloud.your-domain.com:443" in office
    key = state_args(high["nextcloud-collabora-key-present"], "cmd")
    assert "6CCEA47B2281732DF5D504D00C54D189F4BA284D" in key["name"]


def test_the_lab_converges_up_to_the_download_and_says_what_it_does_not(lab_config):
    lab = show(lab_config)
    assert isinstance(lab, dict), lab
    assert not [s for s in lab if s.startswith(("nextcloud-release", "nextcloud-installed", "nextcloud-system",
                                                "nextcloud-apps", "nextcloud-collabora", "nextcloud-office",
                                                "nextcloud-setup-checks"))]
    for state_id in ("nextcloud-php-fpm-running", "nextcloud-nginx-running", "nextcloud-redis-running",
                     "nextcloud-cron-timer-running", "nextcloud-data-dir-managed", "nextcloud-admin-secret-generated"):
        assert state_id in lab, state_id
    pillar = render.pillar(lab_config, GUEST)
    assert "nextcloud" in pillar["platform"]["guest"]["roles"]
    parts = roles.parts_not_converged(pillar)
    assert set(parts["nextcloud"]) == {"application", "collabora"}
    assert "unreachable" in parts["nextcloud"]["application"]


def test_the_proxys_route_to_nextcloud_carries_its_redirects_headers_and_limits(example_config, tmp_path):
    proxy_high = render.caller(example_config, PROXY).cmd("state.show_sls", "reverse_proxy")
    certs = {name: make_cert(tmp_path, f"{name}.your-domain.com", ocsp=False) for name in ("nextcloud", "office")}
    text = nginx_conf(example_config, proxy_high, tmp_path, certs)
    cloud = next(s for s in text.split("\nserver {") if "server_name nextcloud.your-domain.com;" in s
                 and "listen 443 ssl http2;" in s)
    lines = [line.strip() for line in cloud.splitlines()]
    for path in ("/.well-known/caldav", "/.well-known/carddav"):
        at = lines.index(f"location = {path} {{")
        assert lines[at + 1] == "return 301 https://$host/remote.php/dav/;"
    for header, value in HEADERS.items():
        assert f"proxy_hide_header {header};" in lines and f'add_header {header} "{value}" always;' in lines
    assert "proxy_request_buffering off;" in lines and "client_max_body_size 16G;" in lines
    assert "proxy_read_timeout 3600s;" in lines
    office = next(s for s in text.split("\nserver {")
                  if "server_name office.your-domain.com;" in s and "listen 443 ssl http2;" in s)
    assert "proxy_hide_header" not in office and "proxy_set_header Upgrade $http_upgrade;" in office
    result = nginx_check(tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_route_can_say_its_own_redirects_and_headers_over_the_applications(example_site):
    catalog = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    changed = copy.deepcopy(example_site)
    changed["routes"]["nextcloud"]["headers"] = {"X-Frame-Options": "DENY"}
    changed["routes"]["mail"]["redirects"] = {"/.well-known/autoconfig": "/autoconfig"}
    pillar = {"site": changed, "roles": catalog}
    assert site.validate(pillar) == []
    routes = {r["name"]: r for r in site.platform_pillar(pillar, PROXY)["platform"]["edge"]["routes"]}
    assert routes["nextcloud"]["headers"]["X-Frame-Options"] == "DENY"
    assert routes["nextcloud"]["headers"]["X-Robots-Tag"] == "noindex, nofollow", "the rest of the preset stays"
    assert routes["mail"]["redirects"] == {"/.well-known/autoconfig": "/autoconfig"}
    assert routes["mail"]["headers"] == {} and routes["mail"]["request_buffering"] is True


def test_the_nextcloud_pillar_is_validated_with_the_site(example_site):
    catalog = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    good = {"release": {"version": "32.0.1", "sha512": "a" * 128}, "system": {"loglevel": 1},
            "application": {"converge": False, "reason": "offline"}}
    assert site.validate({"site": example_site, "roles": catalog, "nextcloud": good}) == []
    bad = {"release": {"version": "latest", "base_url": "http://download.nextcloud.com"}, "php": {"version": "7.4"},
           "cron_minutes": 0}
    errors = site.validate({"site": example_site, "roles": catalog, "nextcloud": bad})
    assert "nextcloud.release.version: got 'latest'; expected a release version X.Y.Z such as 31.0.9" in errors
    assert "nextcloud.release.base_url: got 'http://download.nextcloud.com'; expected an https URL" in errors
    assert "nextcloud.php.version: got '7.4'; expected '8.2' (Debian bookworm's PHP)" in errors
    assert "nextcloud.cron_minutes: got 0; expected minutes between background job runs (1-60)" in errors


def test_the_lab_report_lists_what_of_nextcloud_it_did_not_converge(lab_config):
    import io
    from types import SimpleNamespace

    from sitectl import labctl

    pillar = render.pillar(lab_config, GUEST)
    guests = sorted(pillar["site"]["guests"])
    lab = SimpleNamespace(pillar=pillar, guests=guests,
                          converges=lambda role: pillar["roles"][role].get("converge", True) is not False)
    out = io.StringIO()
    labctl.print_table(lab, {}, {}, out=out)
    report = out.getvalue()
    off = report.split("not converged in the lab")[1].split("converged in part")[0]
    partly = report.split("converged in part (")[1]
    assert "nextcloud" not in off, "the role converges: it is not listed as switched off"
    lines = [line.split() for line in partly.splitlines() if line.strip().startswith("nextcloud.")]
    assert [(line[0], line[2]) for line in lines] == [("nextcloud.application", "nextcloud"),
                                                      ("nextcloud.collabora", "nextcloud")]


def test_the_data_directory_and_config_php_join_the_sites_backup_plan(example_config, high):
    """The example site names a backup repository: the Nextcloud guest gets the job `nextcloud`, which
    ships the data directory and the folder its prepare step fills, to its own repository off the guest."""
    conf = rendered(example_config, high, "backup-nextcloud-job-managed")
    assert "RESTIC_REPOSITORY=rest:https://backup.your-domain.com:8000/nextcloud-nextcloud" in conf.splitlines()
    assert "JOB_PATHS=(/srv/nextcloud-data /var/backups/nextcloud )" in conf.splitlines()
    assert "JOB_PREPARE=(/usr/local/sbin/nextcloud-backup-prepare )" in conf.splitlines()
    secret = state_args(high["backup-nextcloud-secret-generated"], "vault_server")
    assert secret["name"] == "roles/nextcloud/backup", "the role's own path, which only its guests read"
    assert "backup-nextcloud-timer-running" in high and "backup-nextcloud-repository-initialised" in high


@pytest.mark.parametrize("installed", [True, False])
def test_the_backup_prepare_step_copies_config_php_only_when_there_is_one(example_config, high, tmp_path, installed):
    root, folder = tmp_path / "www", tmp_path / "backup"
    (root / "config").mkdir(parents=True)
    folder.mkdir()
    (folder / "config.php").write_text("<?php $CONFIG = ['instanceid' => 'stale'];\n")
    if installed:
        (root / "config" / "config.php").write_text("<?php $CONFIG = ['instanceid' => 'oc1234'];\n")
    args = state_args(high["nextcloud-backup-prepare-managed"], "file")
    assert args["context"] == {"root": "/var/www/nextcloud", "dir": "/var/backups/nextcloud"}
    caller = render.caller(example_config, GUEST)
    with open(caller.cmd("cp.cache_file", args["source"])) as fh:
        script = caller.cmd("file.apply_template_on_contents", fh.read(), "jinja",
                            {"root": str(root), "dir": str(folder)}, None, "base")
    (tmp_path / "prepare").write_text(script)
    ran = subprocess.run(["sh", str(tmp_path / "prepare")], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    copy = folder / "config.php"
    if installed:
        assert copy.read_text() == (root / "config" / "config.php").read_text()
        assert copy.stat().st_mode & 0o077 == 0, "the instance's secret: root only"
    else:
        assert not copy.exists(), "no stale config.php shipped for a server that is not there"
        assert "the data directory alone" in ran.stderr
