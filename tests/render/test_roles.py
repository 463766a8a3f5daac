"""What each role needs, from one place (sitectl/roles.py): every role folder's settings are merged
and checked the same way, and what the ext_pillar hands a guest is what its states use."""

from __future__ import annotations

import pytest
import yaml

from sitectl import ROOT, render, roles, site

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def catalog() -> dict:
    return yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]


@pytest.mark.parametrize("key", roles.parameter_keys())
def test_every_role_folder_with_defaults_has_a_schema_its_defaults_meet(key, example_site, catalog):
    assert (ROOT / "sitectl/schemas" / f"{key}.yaml").is_file(), f"sitectl/schemas/{key}.yaml"
    defaults = yaml.safe_load((ROOT / "salt" / key / "defaults.yaml").read_text())[key]
    assert site.validate({"site": example_site, "roles": catalog, key: defaults}) == []


def test_the_role_folders_that_take_settings_are_found_not_listed():
    assert set(roles.parameter_keys()) == {p.parent.name for p in (ROOT / "salt").glob("*/defaults.yaml")}
    assert {"common", "vault", "postgresql", "rabbitmq", "reverse_proxy"} <= set(roles.parameter_keys())


def test_a_role_setting_in_pillar_reaches_the_guests_states(example_config):
    caller = render.caller(example_config, "rabbitmq")
    override = {"rabbitmq": {"plugins": ["rabbitmq_management"]}}
    high = caller.cmd("state.show_sls", "rabbitmq.config", pillar=override)
    assert isinstance(high, dict), high
    contents = [arg["contents"] for arg in high["rabbitmq-config-plugins-checked"]["file"]
                if isinstance(arg, dict) and "contents" in arg]
    assert contents == ["[rabbitmq_management]."]


def test_ports_come_from_the_catalog(catalog):
    assert roles.ports(catalog, "rabbitmq")["amqp"] == "5672"
    moved = {**catalog, "rabbitmq": {**catalog["rabbitmq"], "firewall": [
        {**rule, "port": 5673} if rule["name"] == "amqp" else rule for rule in catalog["rabbitmq"]["firewall"]]}}
    assert roles.ports(moved, "rabbitmq")["amqp"] == "5673"


def test_the_proxys_lineages_are_the_ones_its_certificates_are_issued_for(example_config, example_site, catalog):
    pillar = {"site": example_site, "roles": catalog}
    edge = site.platform_pillar(pillar, "reverse-proxy")["platform"]["edge"]
    high = render.caller(example_config, "reverse-proxy").cmd("state.show_sls", "reverse_proxy.certificates")
    issued = sorted(sid[len("reverse-proxy-certificate-"):-len("-issued")] for sid in high
                    if sid.startswith("reverse-proxy-certificate-") and sid.endswith("-issued"))
    lineages = [item["name"] for item in edge["lineages"]]
    # The apps' routes (site.apps.*.route) are the proxy's too (sitectl/apps.py).
    assert issued == lineages == ["api.your-domain.com", "app.your-domain.com", "chat.your-domain.com",
                                  "mail.your-domain.com", "nextcloud.your-domain.com",
                                  "office.your-domain.com"]
