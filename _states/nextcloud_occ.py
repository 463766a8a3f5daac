"""
Nextcloud's release, installation and configuration as states, through ``occ``
(``_modules/nextcloud_occ.py``). Each reads what is, changes only what differs, honours test mode
with the difference it would make, and never returns or logs a secret: the database and admin
passwords are read from Vault inside ``installed`` and reach occ through its environment.

.. code-block:: yaml

    nextcloud-release-present:
      nextcloud_occ.release_present:
        - name: /var/www/nextcloud
        - version: 31.0.9
        - base_url: https://download.nextcloud.com/server/releases
        - key_url: https://nextcloud.com/nextcloud.asc
        - fingerprint: 28806A878AE423A28372792ED75899B9A724937A
        - cache_dir: /var/cache/nextcloud-release
        - owner: nextcloud
        - fetch_script: /usr/local/sbin/nextcloud-fetch-release

    nextcloud-system-config:
      nextcloud_occ.system_config:
        - values: {overwriteprotocol: https, trusted_domains: [cloud.example.org]}
"""

import os
import re
import shutil

from salt.exceptions import CommandExecutionError

__virtualname__ = "nextcloud_occ"


def __virtual__():
    if "nextcloud_occ.status" not in __salt__:
        return False, "nextcloud_occ needs its execution module"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _occ(function, *args, **kwargs):
    return __salt__[f"nextcloud_occ.{function}"](*args, **kwargs)


def _fetch(script, version, base_url, key_url, fingerprint, sha512, cache_dir, into, owner):
    argv = [script, "--version", str(version), "--base-url", base_url, "--key-url", key_url,
            "--fingerprint", fingerprint, "--cache", cache_dir, "--into", into, "--owner", owner]
    if sha512:
        argv += ["--sha512", sha512]
    ret = __salt__["cmd.run_all"](argv, python_shell=False, output_loglevel="quiet", ignore_retcode=True)
    if ret["retcode"] != 0:
        raise CommandExecutionError(ret["stderr"].strip() or f"{script} exited {ret['retcode']}")


def _copy_kept(old, new):
    """What a release does not ship but the installation has: config.php and the apps installed from
    the app store (Nextcloud's manual upgrade keeps these)."""
    config = os.path.join(old, "config", "config.php")
    if os.path.exists(config):
        os.makedirs(os.path.join(new, "config"), exist_ok=True)
        shutil.copy2(config, os.path.join(new, "config", "config.php"))
        stat = os.stat(config)
        os.chown(os.path.join(new, "config", "config.php"), stat.st_uid, stat.st_gid)
    for app in sorted(os.listdir(os.path.join(old, "apps"))) if os.path.isdir(os.path.join(old, "apps")) else []:
        if not os.path.exists(os.path.join(new, "apps", app)):
            shutil.copytree(os.path.join(old, "apps", app), os.path.join(new, "apps", app), symlinks=True)
            stat = os.stat(os.path.join(old, "apps", app))
            for root, dirs, files in os.walk(os.path.join(new, "apps", app)):
                for entry in (root, *(os.path.join(root, item) for item in dirs + files)):
                    os.lchown(entry, stat.st_uid, stat.st_gid)


def _refusal(current, version, approved):
    """Why the code ``current`` may not become ``version`` now, or None: a downgrade never, a jump of
    more than one major release never, an upgrade only once approved (test mode only plans)."""
    have, want = _occ("version_tuple", current), _occ("version_tuple", version)
    if want < have:
        return (f"refusing to downgrade Nextcloud from {current} to {version}: Nextcloud only upgrades. Pin "
                f"{current} (or newer) again; going back means restoring the web root, the data directory and "
                f"the database from the backups taken before the upgrade (docs/nextcloud.md, Upgrades)")
    if want[0] > have[0] + 1:
        return (f"Nextcloud {current} cannot upgrade to {version} at once: it upgrades one major release at a "
                f"time; pin the latest {have[0] + 1}.x first")
    if str(approved) != version and not __opts__["test"]:
        return (f"Nextcloud {current} -> {version} is an upgrade and runs only after the database backup: run "
                f"`salt-run nextcloud.upgrade` on the master (it backs the database up on the postgresql guest, "
                f"then applies this state with the upgrade approved); nothing was changed")
    return None


def release_present(name, version, base_url, key_url, fingerprint, cache_dir, owner, fetch_script,
                    sha512="", approved=""):
    """
    The web root ``name`` holds release ``version``, downloaded and proven by ``fetch_script``
    (key fingerprint, SHA-512, signature) before it was unpacked.

    - no code yet: the release is fetched into ``name``;
    - the same version: nothing;
    - an older ``version`` than the code's: refused (Nextcloud cannot downgrade);
    - a newer one: an upgrade, done only when ``approved`` is that version (the master's
      ``nextcloud.upgrade`` runner sets it after the database backup ran): maintenance mode on, the
      new release beside the old one, config.php and the store's apps kept, the old code kept as
      ``<name>.previous``, ``occ upgrade``, maintenance mode off.
    """
    ret = __utils__["platform_state.new"](name)
    version = str(version)
    try:
        current = _occ("code_version", name)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"Nextcloud in {name}: {exc}")
    fetch = {"script": fetch_script, "version": version, "base_url": base_url, "key_url": key_url,
             "fingerprint": fingerprint, "sha512": sha512, "cache_dir": cache_dir, "owner": owner}
    if current is None:
        return __utils__["platform_state.converge"](
            ret, __opts__["test"], {"version": {"old": None, "new": version}},
            unchanged="", planned=f"Nextcloud {version} would be downloaded, verified and unpacked into {name}",
            apply=lambda: _fetch(**fetch, into=name),
            done=f"Nextcloud {version} downloaded, verified (SHA-512, signature by {fingerprint}) and unpacked "
                 f"into {name}",
            failure=f"Nextcloud {version}: ")
    if _occ("version_tuple", version) == _occ("version_tuple", current):
        ret["comment"] = f"Nextcloud {current} is in {name}"
        return ret
    refusal = _refusal(current, version, approved)
    if refusal:
        return __utils__["platform_state.failed"](ret, refusal)

    def upgrade():
        installed = bool(_occ("status").get("installed"))
        staged, previous = f"{name}.new", f"{name}.previous"
        shutil.rmtree(staged, ignore_errors=True)
        _fetch(**fetch, into=staged)
        if installed:
            _occ("maintenance", True)
        try:
            _copy_kept(name, staged)
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(name, previous)
            os.rename(staged, name)
        except OSError as exc:
            raise CommandExecutionError(f"swapping the code: {exc}") from None
        if installed:
            _occ("upgrade")
            _occ("maintenance", False)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"version": {"old": current, "new": version}},
        unchanged="", planned=f"Nextcloud would be upgraded from {current} to {version} (occ upgrade, in "
                              f"maintenance mode)",
        apply=upgrade,
        done=f"Nextcloud upgraded from {current} to {version}; the previous code is in {name}.previous",
        failure=f"upgrade of Nextcloud from {current} to {version} (maintenance mode stays on until it is "
                f"mended; docs/nextcloud.md, Upgrades): ")


def installed(name, database, admin_user, admin_password_path, data_dir, mount="secret"):
    """
    Nextcloud in ``name`` is installed (``occ maintenance:install``) against the PostgreSQL database
    ``database`` ({name, user, host, password_path, mount}) with the admin ``admin_user``, whose
    password is read from Vault at ``<mount>/data/<admin_password_path>`` (field ``password``), as is
    the database owner's. Neither is an argument, a return or a log line.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        done = bool(_occ("status").get("installed"))
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"Nextcloud in {name}: {exc}")
    where = f"{database['host']}/{database['name']}"

    def install():
        db_password = __salt__["vault_server.secret_read"](database["password_path"], "password",
                                                          mount=database.get("mount", "secret"))
        admin_password = __salt__["vault_server.secret_read"](admin_password_path, "password", mount=mount)
        _occ("install", {k: database[k] for k in ("name", "user", "host")}, admin_user, data_dir,
             db_password, admin_password)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {} if done else {"installed": {"old": False, "new": where}},
        unchanged=f"Nextcloud in {name} is installed",
        planned=f"Nextcloud would be installed against {where} with the admin {admin_user} (passwords from Vault)",
        apply=install,
        done=f"Nextcloud installed against {where}; the admin {admin_user}'s password is in Vault at "
             f"{mount}/data/{admin_password_path}",
        failure="occ maintenance:install: ")


def system_config(name, values):
    """The system configuration has ``values`` (key -> value); each key differing is set with
    ``occ config:system:set``, the others are left alone."""
    ret = __utils__["platform_state.new"](name)
    try:
        changes = _occ("config_differences", values)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"Nextcloud's system configuration: {exc}")

    def apply():
        for key in sorted(changes):
            _occ("system_set", key, values[key])

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"Nextcloud's system configuration has the {len(values)} settings declared",
        planned=f"occ would set {', '.join(sorted(changes))}",
        apply=apply,
        done=f"occ set {', '.join(sorted(changes))}",
        failure="occ config:system:set: ")


def apps_enabled(name, apps):
    """Each app of ``apps`` is enabled (installed from the app store first when the server lacks it)."""
    ret = __utils__["platform_state.new"](name)
    try:
        enabled = _occ("apps")["enabled"]
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"Nextcloud's apps: {exc}")
    missing = [app for app in apps if app not in enabled]

    def apply():
        for app in missing:
            _occ("app_enable", app)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"enabled": missing} if missing else {},
        unchanged=f"the apps {', '.join(apps)} are enabled",
        planned=f"occ would enable {', '.join(missing)}",
        apply=apply,
        done=f"occ enabled {', '.join(missing)}",
        failure="occ app:enable: ")


def app_config(name, values):
    """App ``name``'s settings (``occ config:app:set``) are ``values`` (key -> string)."""
    ret = __utils__["platform_state.new"](name)
    try:
        current = {key: _occ("app_config_get", name, key) for key in values}
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"Nextcloud app {name}'s settings: {exc}")
    changes = {key: {"old": current[key], "new": str(value)} for key, value in values.items()
               if current[key] != str(value)}

    def apply():
        for key in sorted(changes):
            _occ("app_config_set", name, key, values[key])

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"the settings of {name} are as declared",
        planned=f"occ would set {name}'s {', '.join(sorted(changes))}",
        apply=apply,
        done=f"occ set {name}'s {', '.join(sorted(changes))}",
        failure=f"occ config:app:set {name}: ")


# occ setupchecks arrived with Nextcloud 28 (OCP\SetupCheck, "@since 28.0.0").
SETUP_CHECKS_SINCE = 28


def _check_line(category, key, result):
    """``category: name (description)``, the description's rich-text placeholders ``{x}`` replaced by
    their parameters' names, as the admin overview prints them."""
    result = result or {}
    description = result.get("description") or "no details"
    for placeholder, parameter in (result.get("descriptionParameters") or {}).items():
        shown = parameter.get("name") if isinstance(parameter, dict) else parameter
        description = description.replace("{" + str(placeholder) + "}", str(shown))
    return f"{category}: {result.get('name') or key} ({description})"


def setup_checks_pass(name, fail_on=("error",)):
    """
    The admin overview's setup checks (``occ setupchecks``) report nothing of a severity in
    ``fail_on``: the state fails naming each such check; the warnings are in its comment. It only
    reads: it never changes anything, in test mode or not. A server older than Nextcloud 28 has no
    such command: the state says so and passes.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        version = str(_occ("status").get("versionstring") or "")
        major = re.match(r"\d+", version)
        if major and int(major.group()) < SETUP_CHECKS_SINCE:
            ret["comment"] = (f"Nextcloud {version} has no occ setupchecks (Nextcloud {SETUP_CHECKS_SINCE} and "
                              f"later): not checked")
            return ret
        checks = _occ("setup_checks")
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"occ setupchecks: {exc}")
    found = {severity: [_check_line(category, key, result)
                        for category, results in sorted(checks.items())
                        for key, result in sorted((results or {}).items())
                        if (result or {}).get("severity") == severity]
             for severity in ("error", "warning")}
    failing = [line for severity in fail_on for line in found.get(severity, [])]
    if failing:
        return __utils__["platform_state.failed"](
            ret, f"Nextcloud's setup checks fail ({len(failing)} of severity {'/'.join(fail_on)}): "
                 + "; ".join(failing)
                 + (f" (warnings: {'; '.join(found['warning'])})" if found["warning"] and "warning" not in fail_on
                    else ""))
    ret["comment"] = "Nextcloud's setup checks pass" + (
        f" (warnings: {'; '.join(found['warning'])})" if found["warning"] else "")
    return ret
