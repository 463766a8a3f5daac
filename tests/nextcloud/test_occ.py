"""The occ sequence, render tier: the nextcloud states as the example site compiles them for its
Nextcloud guest, run through Salt's loader (the repository's ``nextcloud_occ`` execution and state
modules) against a fake ``occ`` (``fake_occ.py``: the server has no build reachable here), with the
passwords in a real OpenBao. Asserted: the commands and arguments occ gets, in order; no secret in a
command line, a state return or the minion's log; each setting set only when it differs; test mode
changes nothing; a second run only reads. The release states run the role's real fetch script against
a release made and signed here: install, an upgrade only once approved (maintenance mode, occ
upgrade), and a downgrade refused."""

from __future__ import annotations

import getpass
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sitectl import ROOT, render
from tests.conftest import state_args
from tests.nextcloud import test_release as release
from tests.openbao import BaoServer
from tests.vault.conftest import SaltCaller, write_token

pytestmark = pytest.mark.render

FAKE_OCC = Path(__file__).with_name("fake_occ.py")
DB_PATH, ADMIN_PATH = "roles/postgresql/users/nextcloud", "roles/nextcloud/admin"
READS = {"status", "config:list", "app:list", "config:app:get", "setupchecks"}


@pytest.fixture(scope="module")
def high(example_config) -> dict:
    compiled = render.caller(example_config, "nextcloud").cmd("state.show_sls", "nextcloud")
    assert isinstance(compiled, dict), compiled
    return compiled


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    server = BaoServer(tmp_path_factory.mktemp("nc-bao"), dev=True).start()
    server.write(DB_PATH, password="db-" + hashlib.sha256(b"db").hexdigest()[:24])
    server.write(ADMIN_PATH, password="admin-" + hashlib.sha256(b"admin").hexdigest()[:24])
    yield server
    server.stop()


class Occ:
    """The fake occ's state file: the calls it got and what it holds."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def state(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {"calls": []}

    @property
    def calls(self) -> list[list[str]]:
        return self.state["calls"]

    def writes(self, since: int = 0) -> list[list[str]]:
        return [c for c in self.calls[since:] if c[0] not in READS]


@pytest.fixture
def minion(tmp_path, bao):
    occ = Occ(tmp_path / "occ.json")
    token = write_token(tmp_path / "token", bao.root_token)
    caller = SaltCaller(tmp_path / "salt", {"url": bao.url, "token_file": str(token)}, config={
        "nextcloud_occ": {"command": [sys.executable, str(FAKE_OCC), str(occ.path)], "user": getpass.getuser(),
                          "root": str(tmp_path / "www" / "nextcloud")},
    })
    return caller, occ


def run(caller, high: dict, state_id: str, test: bool = False, **override) -> dict:
    args = state_args(high[state_id], "nextcloud_occ")
    fun = args.pop("__fun__")
    args = {k: v for k, v in args.items() if k not in ("require", "order", "onchanges")} | override
    name = args.pop("name", state_id)
    return caller.state(f"nextcloud_occ.{fun}", name, test=test, **args)


SEQUENCE = ("nextcloud-installed", "nextcloud-system-config", "nextcloud-background-jobs-cron",
            "nextcloud-apps-enabled", "nextcloud-office-app-enabled", "nextcloud-office-app-config",
            "nextcloud-setup-checks-pass")


def test_the_example_site_gives_occ_this_sequence_and_a_second_run_only_reads(minion, high, bao, tmp_path, caplog):
    caplog.set_level("DEBUG")
    caller, occ = minion
    (tmp_path / "www" / "nextcloud").mkdir(parents=True)
    rets = {state_id: run(caller, high, state_id) for state_id in SEQUENCE}
    assert all(r["result"] is True for r in rets.values()), {k: r["comment"] for k, r in rets.items()}
    writes = occ.writes()
    assert writes[0] == ["maintenance:install", "--database=pgsql", "--database-name=nextcloud",
                         "--database-host=10.10.10.103:5432", "--database-user=nextcloud", "--admin-user=admin",
                         "--data-dir=/srv/nextcloud-data"]
    assert sorted(writes[1:]) == sorted([
        ["config:system:set", "default_language", "--value=en", "--type=string"],
        ["config:system:set", "default_phone_region", "--value=RU", "--type=string"],
        ["config:system:set", "forwarded_for_headers", "0", "--value=HTTP_X_FORWARDED_FOR", "--type=string"],
        ["config:system:set", "log_type", "--value=file", "--type=string"],
        ["config:system:set", "loglevel", "--value=2", "--type=integer"],
        ["config:system:set", "maintenance_window_start", "--value=1", "--type=integer"],
        ["config:system:set", "memcache.distributed", "--value=\\OC\\Memcache\\Redis", "--type=string"],
        ["config:system:set", "memcache.local", "--value=\\OC\\Memcache\\APCu", "--type=string"],
        ["config:system:set", "memcache.locking", "--value=\\OC\\Memcache\\Redis", "--type=string"],
        ["config:system:set", "overwrite.cli.url", "--value=https://nextcloud.your-domain.com", "--type=string"],
        ["config:system:set", "overwriteprotocol", "--value=https", "--type=string"],
        ["config:system:set", "redis", "host", "--value=/run/redis/redis-server.sock", "--type=string"],
        ["config:system:set", "redis", "port", "--value=0", "--type=integer"],
        ["config:system:set", "trusted_domains", "0", "--value=nextcloud.your-domain.com", "--type=string"],
        ["config:system:set", "trusted_proxies", "0", "--value=10.10.10.100", "--type=string"],
    ] + [
        ["config:app:set", "core", "backgroundjobs_mode", "--value=cron"],
        ["app:install", "calendar"], ["app:install", "contacts"], ["app:install", "richdocuments"],
        ["config:app:set", "richdocuments", "public_wopi_url", "--value=https://office.your-domain.com"],
        ["config:app:set", "richdocuments", "wopi_allowlist", "--value=10.10.10.102"],
    ] + [["config:app:set", "richdocuments", "wopi_url", "--value=https://office.your-domain.com"]])
    assert len(writes) == 23, "each setting once"
    system = occ.state["system"]
    assert system["trusted_domains"] == ["nextcloud.your-domain.com"], "the installer's localhost is replaced"
    assert system["redis"] == {"host": "/run/redis/redis-server.sock", "port": 0}

    # The passwords reached occ through its environment, never its arguments, a return or the log.
    secrets = (bao.read(DB_PATH), bao.read(ADMIN_PATH))
    assert occ.state["install_secrets"] == {"NC_DATABASE_PASS": secrets[0], "NC_ADMIN_PASS": secrets[1]}
    seen = json.dumps(occ.calls) + json.dumps(rets) + caplog.text
    assert not any(secret in seen for secret in secrets)

    before = len(occ.calls)
    again = {state_id: run(caller, high, state_id) for state_id in SEQUENCE}
    assert all(r["result"] is True and r["changes"] == {} for r in again.values()), again
    assert occ.writes(before) == [], "a second run only reads"


def test_test_mode_says_what_would_change_and_occ_writes_nothing(minion, high):
    caller, occ = minion
    planned = run(caller, high, "nextcloud-installed", test=True)
    assert planned["result"] is None and planned["changes"] == {
        "installed": {"old": False, "new": "10.10.10.103:5432/nextcloud"}}
    assert occ.writes() == []
    run(caller, high, "nextcloud-installed")
    before = len(occ.calls)
    planned = run(caller, high, "nextcloud-system-config", test=True)
    assert planned["result"] is None
    assert planned["changes"]["trusted_domains"] == {"old": ["localhost"], "new": ["nextcloud.your-domain.com"]}
    assert planned["changes"]["overwriteprotocol"] == {"old": None, "new": "https"}
    assert occ.writes(before) == []


def test_a_setting_the_admin_changed_is_set_back_and_only_that_one(minion, high):
    caller, occ = minion
    for state_id in ("nextcloud-installed", "nextcloud-system-config"):
        run(caller, high, state_id)
    state = occ.state
    state["system"]["loglevel"] = 0
    state["system"]["trusted_proxies"] = ["10.10.10.100", "10.10.10.99"]
    state["system"]["mail_domain"] = "your-domain.com"  # not ours: left alone
    occ.path.write_text(json.dumps(state))
    before = len(occ.calls)
    ret = run(caller, high, "nextcloud-system-config")
    assert ret["result"] is True and sorted(ret["changes"]) == ["loglevel", "trusted_proxies"]
    assert occ.writes(before) == [["config:system:set", "loglevel", "--value=2", "--type=integer"],
                                  ["config:system:delete", "trusted_proxies", "1"],
                                  ["config:system:set", "trusted_proxies", "0", "--value=10.10.10.100",
                                   "--type=string"]]
    assert occ.state["system"]["trusted_proxies"] == ["10.10.10.100"]
    assert occ.state["system"]["mail_domain"] == "your-domain.com"


# ------------------------------------------------------------------ the release: install, upgrade, downgrade

@pytest.fixture
def signed_mirror(tmp_path):
    fpr, key = release.make_key(tmp_path / "gpg-nextcloud", "nextcloud")
    return release.Mirror(tmp_path / "mirror", tmp_path / "gpg-nextcloud", key), fpr


def publish(mirror: release.Mirror, version: str) -> None:
    """Release ``version`` on the mirror (the helper's tarball, renamed and re-versioned)."""
    old = release.VERSION
    try:
        release.VERSION = version
        mirror.publish(release.release_tarball())
    finally:
        release.VERSION = old


def release_args(high: dict, mirror, fpr: str, tmp_path: Path, version: str, approved: str = "") -> dict:
    args = state_args(high["nextcloud-release-present"], "nextcloud_occ")
    assert args["fetch_script"] == "/usr/local/sbin/nextcloud-fetch-release"
    assert args["fingerprint"] == "28806A878AE423A28372792ED75899B9A724937A", "Nextcloud's signing key"
    assert args["key_url"] == "https://nextcloud.com/nextcloud.asc"
    assert args["version"] == release.VERSION and args["approved"] == ""
    script = tmp_path / "nextcloud-fetch-release"
    shutil.copy(ROOT / "salt/nextcloud/files/nextcloud-fetch-release.sh", script)
    script.chmod(0o755)
    return {"version": version, "approved": approved, "base_url": f"file://{mirror.root}",
            "key_url": f"file://{mirror.root}/nextcloud.asc", "fingerprint": fpr, "cache_dir": str(tmp_path / "cache"),
            "owner": getpass.getuser(), "fetch_script": str(script), "sha512": ""}


def test_a_release_is_installed_upgraded_only_once_approved_and_never_downgraded(minion, high, signed_mirror,
                                                                                 tmp_path):
    caller, occ = minion
    mirror, fpr = signed_mirror
    root = str(tmp_path / "www" / "nextcloud")
    present = lambda version, **kw: caller.state("nextcloud_occ.release_present", root,  # noqa: E731
                                                 **release_args(high, mirror, fpr, tmp_path, version, **kw))
    first = present(release.VERSION)
    assert first["result"] is True and first["changes"] == {"version": {"old": None, "new": release.VERSION}}
    assert present(release.VERSION)["changes"] == {}
    run(caller, high, "nextcloud-installed")
    (Path(root) / "config").mkdir()
    (Path(root) / "config" / "config.php").write_text("<?php $CONFIG = ['instanceid' => 'kept'];\n")
    (Path(root) / "apps" / "calendar").mkdir(parents=True)

    publish(mirror, "31.0.10")
    before = len(occ.calls)
    refused = present("31.0.10")
    assert refused["result"] is False and "salt-run nextcloud.upgrade" in refused["comment"]
    assert occ.writes(before) == [] and "31.0.9" in (Path(root) / "version.php").read_text()

    planned = caller.state("nextcloud_occ.release_present", root, test=True,
                           **release_args(high, mirror, fpr, tmp_path, "31.0.10", approved="31.0.10"))
    assert planned["result"] is None and planned["changes"] == {"version": {"old": "31.0.9", "new": "31.0.10"}}

    upgraded = present("31.0.10", approved="31.0.10")
    assert upgraded["result"] is True, upgraded["comment"]
    assert upgraded["changes"] == {"version": {"old": "31.0.9", "new": "31.0.10"}}
    assert occ.writes(before) == [["maintenance:mode", "--on"], ["upgrade"], ["db:add-missing-indices"],
                                  ["maintenance:mode", "--off"]]
    assert "31.0.10" in (Path(root) / "version.php").read_text()
    assert "kept" in (Path(root) / "config" / "config.php").read_text(), "config.php is carried over"
    assert (Path(root) / "apps" / "calendar").is_dir(), "the store's apps are carried over"
    assert "31.0.9" in (Path(f"{root}.previous") / "version.php").read_text()
    assert present("31.0.10", approved="31.0.10")["changes"] == {}

    before = len(occ.calls)
    down = present("31.0.9")
    assert down["result"] is False and down["changes"] == {}
    assert down["comment"].startswith("refusing to downgrade Nextcloud from 31.0.10 to 31.0.9")
    skip = present("33.0.0", approved="33.0.0")
    assert skip["result"] is False and "one major release at a time" in skip["comment"]
    assert occ.writes(before) == [] and "31.0.10" in (Path(root) / "version.php").read_text()


# ------------------------------------------------------------------ the wrapper, under real PHP

CONSOLE = """<?php
// What Nextcloud's console.php would see: its argv (Symfony's ArgvInput reads $_SERVER['argv']), the
// environment, and this process's command line as the process list shows it.
echo json_encode(['server_argv' => $_SERVER['argv'], 'argv' => $GLOBALS['argv'],
                  'env' => [getenv('NC_DATABASE_PASS'), getenv('NC_ADMIN_PASS')],
                  'cmdline' => str_replace("\\0", ' ', file_get_contents('/proc/self/cmdline')),
                  'cwd' => getcwd()]);
"""


def test_the_env_wrapper_gives_occ_the_passwords_inside_php_never_on_its_command_line(tmp_path):
    php = shutil.which("php8.2") or pytest.fail("php8.2-cli is not installed (make setup installs it)")
    root = tmp_path / "nextcloud"
    root.mkdir()
    (root / "occ").write_text("#!/usr/bin/env php\n<?php\nrequire_once __DIR__ . '/console.php';\n")
    (root / "console.php").write_text(CONSOLE)
    wrapper = ROOT / "salt/nextcloud/files/occ-env.php"
    env = {"PATH": "/usr/bin:/bin", "NC_DATABASE_PASS": "db secret 'quoted'", "NC_ADMIN_PASS": "admin$secret"}
    ran = subprocess.run([php, str(wrapper), str(root / "occ"), "maintenance:install", "--database=pgsql"],
                         capture_output=True, text=True, check=False, env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    expected = [str(root / "occ"), "maintenance:install", "--database=pgsql",
                "--database-pass=db secret 'quoted'", "--admin-pass=admin$secret"]
    assert seen["server_argv"] == expected and seen["argv"] == expected, "occ's own options, exact"
    assert seen["env"] == [False, False], "gone from the environment before occ runs"
    assert "secret" not in seen["cmdline"], "never on the command line"
    assert seen["cwd"] == str(root)
    plain = subprocess.run([php, str(wrapper), str(root / "occ"), "status"], capture_output=True, text=True,
                           check=False, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert json.loads(plain.stdout)["argv"] == [str(root / "occ"), "status"], "no secret options without secrets"


def check(name, severity, description=None, parameters=None) -> dict:
    """One result as occ setupchecks --output=json prints it (SetupResult::jsonSerialize)."""
    return {"name": name, "severity": severity, "description": description, "descriptionParameters": parameters,
            "linkToDoc": "https://docs.nextcloud.com/server/latest/go.php?to=admin-setup-well-known-URL"}


def with_checks(occ, results=None, **changes) -> None:
    state = occ.state
    if results is not None:
        state["setupchecks"] = results
    state.update(changes)
    occ.path.write_text(json.dumps(state))


def test_a_setup_check_in_error_fails_the_apply_and_warnings_are_said(minion, high):
    caller, occ = minion
    run(caller, high, "nextcloud-installed")
    with_checks(occ, {
        "security": {"OCA\\Settings\\SetupChecks\\HttpsUrlGeneration": check(
            "HTTPS access and URLs", "error", "Accessed through {url} over plain HTTP",
            {"url": {"type": "highlight", "id": "url", "name": "http://cloud.your-domain.com"}})},
        "config": {"OCA\\Settings\\SetupChecks\\EmailTestSuccessful": check(
            "Email test", "warning", "You have not set or verified your email server configuration, yet.")},
        "system": {"OCA\\Settings\\SetupChecks\\CronInfo": check("Cron last run", "success")}})
    failed = run(caller, high, "nextcloud-setup-checks-pass")
    assert failed["result"] is False and failed["changes"] == {}
    assert "Nextcloud's setup checks fail (1 of severity error): security: HTTPS access and URLs (Accessed " \
           "through http://cloud.your-domain.com over plain HTTP)" in failed["comment"], failed["comment"]
    assert "warnings: config: Email test (You have not set or verified" in failed["comment"]
    assert "Cron last run" not in failed["comment"], "a success is not news"
    assert occ.calls[-1] == ["setupchecks", "--output=json"], "the exact command"


def test_warnings_alone_pass_though_occ_exits_1_for_them(minion, high):
    """occ setupchecks exits 1 whenever a check is not a success (a warning, even an info): the state goes
    by the severities in its JSON, not by the exit code."""
    caller, occ = minion
    run(caller, high, "nextcloud-installed")
    with_checks(occ, {
        "config": {"OCA\\Settings\\SetupChecks\\EmailTestSuccessful": check("Email test", "warning",
                                                                                   "no mail server")},
        "system": {"OCA\\Settings\\SetupChecks\\PhpOpcacheSetup": check("PHP opcache", "info", "noted")}})
    before = len(occ.calls)
    passed = run(caller, high, "nextcloud-setup-checks-pass")
    assert passed["result"] is True and passed["changes"] == {}
    assert passed["comment"] == "Nextcloud's setup checks pass (warnings: config: Email test (no mail server))"
    assert occ.calls[before:] == [["status", "--output=json"], ["setupchecks", "--output=json"]], \
        "only reads: the version, then the checks"


def test_occs_own_error_fails_the_state_with_its_message(minion, high):
    caller, occ = minion
    run(caller, high, "nextcloud-installed")
    with_checks(occ, installed=False)  # occ then knows only a few commands, setupchecks not among them
    failed = run(caller, high, "nextcloud-setup-checks-pass")
    assert failed["result"] is False
    assert failed["comment"].startswith("occ setupchecks: ") and "not installed" in failed["comment"]


def test_a_server_before_28_has_no_setup_checks_and_the_state_says_so(minion, high):
    caller, occ = minion
    run(caller, high, "nextcloud-installed")
    with_checks(occ, versionstring="27.1.11", version="27.1.11.3")
    before = len(occ.calls)
    skipped = run(caller, high, "nextcloud-setup-checks-pass")
    assert skipped["result"] is True and skipped["changes"] == {}
    assert skipped["comment"] == "Nextcloud 27.1.11 has no occ setupchecks (Nextcloud 28 and later): not checked"
    assert occ.calls[before:] == [["status", "--output=json"]]
