"""The whole example site as a salt-cloud map, in parallel, and the profiles checked against the site."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from sitectl import ROOT, site
from tests.proxmox.conftest import (
    TEMPLATE_VMID,
    TOKEN_ID,
    assert_schema_clean,
    assert_tasks_awaited,
    guests,
    make_cloud,
    schema_violations,
)

pytestmark = pytest.mark.functional


def example_pillar() -> dict:
    return {"site": yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())["site"],
            "roles": yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]}


def profiles() -> dict:
    out = {}
    for path in sorted(Path(ROOT / "cloud.profiles.d").glob("*.conf")):
        out.update(yaml.safe_load(path.read_text()) or {})
    return out


def test_profiles_and_map_agree_with_the_site():
    pillar = example_pillar()
    assert site.validate(pillar) == []
    known = profiles()
    mapped = site.cloud_map(pillar)
    assert sorted(n for names in mapped.values() for n in names) == sorted(pillar["site"]["guests"])
    assert set(mapped) <= set(known), f"the map names profiles that do not exist: {set(mapped) - set(known)}"
    assert set(known) <= set(mapped), f"profiles no guest of the example site uses: {set(known) - set(mapped)}"
    for profile, names in mapped.items():
        settings = dict(known[profile])
        while "extends" in settings:
            settings = {**known[settings.pop("extends")], **settings}
        assert settings["provider"] == "platform"
        for name in names:
            kind = pillar["site"]["guests"][name]["kind"]
            if kind == "vm":
                assert settings.get("clone_from") and settings.get("agent"), (name, profile)
            else:
                assert settings.get("image", "").startswith("local:vztmpl/"), name
                # Unprivileged, but for k3s (its kubelet and containerd need a privileged container).
                k3s = "k3s" in pillar["site"]["guests"][name]["roles"]
                assert settings.get("unprivileged") is not k3s, (name, profile)
                nested = any(pillar["roles"][r].get("nesting") for r in pillar["site"]["guests"][name]["roles"])
                assert ("nesting=1" in str(settings.get("features", ""))) == nested, (name, profile)


def test_parallel_map_creates_the_whole_site(tmp_path, pve, pve_pki):
    cloud = make_cloud(tmp_path, pve, pve_pki[0])
    started = time.monotonic()
    out = cloud.json("-m", str(cloud.map_file()), "-P")
    seconds = time.monotonic() - started
    wanted = example_pillar()["site"]["guests"]
    assert set(out) == set(wanted), out
    assert not [n for n, r in out.items() if "Error" in r], out
    made = guests(pve)
    for name, guest in wanted.items():
        assert made[guest["vmid"]].name == name and made[guest["vmid"]].status == "running", name
    assert set(made) == {g["vmid"] for g in wanted.values()} | {TEMPLATE_VMID}
    assert cloud.accepted() == set(wanted)
    # The nested profile's features reached PVE.
    assert "nesting=1" in str(made[112].config.get("features"))
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)
    print(f"parallel map of {len(wanted)} guests: {seconds:.1f} s")

    # A second run of the same map creates nothing.
    again = cloud.json("-m", str(cloud.map_file()), "-P")
    assert all(r == {"Message": "Already running."} for r in again.values()), again
    destroyed = cloud.json("-d", *sorted(wanted))
    assert destroyed
    assert set(guests(pve)) == {TEMPLATE_VMID} and cloud.accepted() == set()


def test_the_schema_check_catches_a_request_outside_pves_schema(pve):
    bad = [("POST", "/api2/json/nodes/pve/lxc", b"vmid=100&ostemplate=local%3Avztmpl%2Fx.tar.zst&cores=two"),
           ("POST", "/api2/json/nodes/pve/lxc/100/status/launch", b""),
           ("PUT", "/api2/json/nodes/pve/qemu/100/config", b"ipconfig0=ip%3Dnot-an-ip")]
    problems = schema_violations(bad)
    assert len(problems) == 3, problems
    assert "cores" in problems[0] and "not a method" in problems[1] and "ipconfig0" in problems[2]


def test_token_secret_from_an_sdb_uri(tmp_path, pve, pve_pki):
    cloud = make_cloud(tmp_path, pve, pve_pki[0], token_secret="sdb://osenv/PLATFORM_PVE_SECRET")  # noqa: S106
    with (cloud.conf / "cloud").open("a") as fh:
        fh.write("osenv: {driver: env}\n")
    provider = (cloud.conf / "cloud.providers.d" / "platform.conf").read_text()
    assert "sdb://osenv/PLATFORM_PVE_SECRET" in provider and "token_secret_env" not in provider
    pve.add_ct(300, "probe", node="pve")
    cloud.env["PLATFORM_PVE_SECRET"] = pve.apitokens[TOKEN_ID]
    listed = cloud.json("-Q", secret=None)
    assert list(listed["platform"]["proxmox_platform"]) == ["probe"]  # only an authenticated request lists it


def test_the_provider_config_never_holds_a_secret(tmp_path):
    from sitectl.config import SaltSettings, write_config

    settings = SaltSettings(state_dir=tmp_path / "s", provider="proxmox", proxmox={"token_secret": "abc123"})
    with pytest.raises(ValueError, match="only an sdb:// URI may be written"):
        write_config(settings)
    conf = write_config(SaltSettings(state_dir=tmp_path / "s", provider="proxmox"))
    provider = yaml.safe_load((conf / "cloud.providers.d" / "platform.conf").read_text())["platform"]
    assert provider["url"] == "https://pve.your-domain.com:8006" and provider["token_id"] == "salt@pve!platform"  # noqa: S105
    assert provider["token_secret_env"] == "PVE_TOKEN_SECRET" and "token_secret" not in provider  # noqa: S105
    assert provider["verify_ssl"] is True and provider["bootstrap"] == "official" and provider["deploy"] is False


def test_a_site_without_vmids_is_valid_and_its_views_say_so():
    pillar = example_pillar()
    for guest in pillar["site"]["guests"].values():
        guest.pop("vmid")
    pillar["site"]["guests"]["vault"].update(protection=True, tags=["secrets"])
    assert site.validate(pillar) == []
    view = site.guest_view(pillar, "vault")
    assert view["vmid"] is None and view["protection"] is True and view["tags"] == ["secrets"]
    assert site.guest_view(pillar, "control")["protection"] is False
    assert sorted(n for names in site.cloud_map(pillar).values() for n in names) == sorted(pillar["site"]["guests"])
