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
    assert {"k3s", "mailcow", "git-lab-docker-runner"} == set(cloud_map["debian12-lxc-nested"]), \
        "Docker and k3s guests are nested containers"
