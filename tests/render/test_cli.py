"""sitectl's commands that a production operator runs before anything exists (no daemon)."""

from __future__ import annotations

import pytest
import yaml

from sitectl import cli

pytestmark = pytest.mark.render


def test_cloud_map_puts_each_guest_of_the_site_under_its_profile(tmp_path, capsys, example_site):
    assert cli.main(["--state-dir", str(tmp_path), "cloud-map"]) == 0
    cloud_map = yaml.safe_load(capsys.readouterr().out)
    assert sorted(g for guests in cloud_map.values() for g in guests) == sorted(example_site["guests"])
    assert cloud_map["debian12-vm"] == ["monitoring"], "the monitoring guest is a VM"
    assert {"mailcow", "git-lab-docker-runner"} == set(cloud_map["debian12-lxc-nested"]), \
        "Docker guests are nested containers"
    assert cloud_map["debian12-lxc-k3s"] == ["k3s"], "k3s runs in a privileged nested container"


def test_master_config_keeps_the_job_cache_and_logs_to_root_and_jobs_short(tmp_path, capsys):
    assert cli.main(["--state-dir", str(tmp_path), "master-config"]) == 0
    for private in ("pki", "cache", "log"):
        assert (tmp_path / private).stat().st_mode & 0o777 == 0o700, f"{private}/ must be root's only"
    master = yaml.safe_load((tmp_path / "etc" / "master").read_text())
    assert master["cachedir"].startswith(f"{tmp_path}/cache/") and master["log_file"].startswith(f"{tmp_path}/log/")
    assert master["keep_jobs_seconds"] == 3600, "a job's return (a secret a salt-call printed) is kept one hour"


def test_new_vault_credentials_drop_the_masters_cached_vault_token(tmp_path):
    """A lab brought up again within the hour (a new Vault): the master's cached token of the old
    one would be refused on every guest's token request. New credentials forget it."""
    from sitectl import vaultctl

    assert cli.main(["--state-dir", str(tmp_path), "master-config"]) == 0
    config_dir = tmp_path / "etc"
    cachedir = yaml.safe_load((config_dir / "master").read_text())["cachedir"]
    session = tmp_path / cachedir / "vault" / "connection" / "session"
    session.parent.mkdir(parents=True)
    session.write_text("a token of the Vault that is gone")
    vaultctl.master_credentials(config_dir, "https://10.0.0.5:8200", "-----BEGIN CERTIFICATE-----", "role", "id")
    assert not session.exists() and (config_dir / "vault-master.yaml").stat().st_mode & 0o777 == 0o600
    session.parent.mkdir(parents=True)
    session.write_text("again")
    vaultctl.lab_teardown(tmp_path, config_dir)
    assert not session.exists() and not (config_dir / "vault-master.yaml").exists()
