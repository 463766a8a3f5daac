"""Faults a real PVE shows: each ends in an error that says what to do, and leaves no half-created guest."""

from __future__ import annotations

import pytest

from tests.proxmox.conftest import (
    NODE,
    TEMPLATE_VMID,
    assert_schema_clean,
    assert_tasks_awaited,
    guests,
    make_cloud,
)

pytestmark = pytest.mark.functional


def failed(cloud, *args, **kwargs) -> str:
    result = cloud.run(*args, **kwargs)
    assert result.returncode != 0, f"salt-cloud {' '.join(args)} should have failed:\n{result.stdout}"
    return result.stdout + result.stderr


def only_templates(pve) -> bool:
    return set(guests(pve)) == {TEMPLATE_VMID}


def test_failed_task_is_reported_with_pves_text_and_the_guest_removed(pve, cloud):
    # The container is created, then its start task ends with an error (exitstatus not OK).
    pve.fail("POST", f"/nodes/{NODE}/lxc/100/status/start", error="missing_rootfs_configuration")
    text = failed(cloud, "-p", "debian12-lxc", "reverse-proxy")
    assert "starting lxc 100: the PVE task failed: missing 'rootfs' configuration" in text
    assert "was stopped and destroyed" in text
    assert only_templates(pve) and "reverse-proxy" not in cloud.accepted()
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)


def test_a_failed_create_task_leaves_nothing(pve, cloud):
    # PVE's own create task fails (the OS template is gone from the storage): PVE removes the container.
    pve.store_file("local", "other-template.tar.zst", 1024, content="vztmpl")
    pve.storages["local"]["volumes"].pop("vztmpl/debian-12-standard_12.12-1_amd64.tar.zst")
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "the PVE task failed: unable to create CT 111 - volume" in text and "does not exist" in text
    assert "PVE holds no guest 111 (nothing remains)" in text
    assert only_templates(pve) and "vault" not in cloud.accepted()


def test_a_500_is_retried_and_then_reported(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc", 500, "Internal Server Error", times=1)
    cloud.json("-p", "debian12-lxc", "vault")  # one 500, then the retry succeeds
    assert guests(pve)[111].status == "running"
    posts = [r for r in pve.requests if r[0] == "POST" and r[1].endswith(f"/nodes/{NODE}/lxc")]
    assert len(posts) == 2

    pve.fail("POST", f"/nodes/{NODE}/lxc", 500, "Internal Server Error")
    text = failed(cloud, "-p", "debian12-lxc", "rabbitmq")
    assert "POST /nodes/pve/lxc: PVE answered 500: Internal Server Error" in text
    assert 105 not in guests(pve) and "rabbitmq" not in cloud.accepted()
    assert len([r for r in pve.requests if r[0] == "POST" and r[1].endswith(f"/nodes/{NODE}/lxc")]) == 2 + 3


def test_a_4xx_is_never_retried(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc", error="param_storage_storage_does_not")
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "PVE answered 400: Parameter verification failed." in text
    assert len([r for r in pve.requests if r[0] == "POST" and r[1].endswith(f"/nodes/{NODE}/lxc")]) == 1
    assert only_templates(pve)


def test_an_api_that_does_not_answer_times_out(tmp_path, pve, pve_pki):
    cloud = make_cloud(tmp_path, pve, pve_pki[0], timeout=1, retries=1)
    pve.flaky_network(hang_rate=1.0, hang_secs=3)
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "no answer from https://127.0.0.1" in text and "within 1.0 s (tried 2 time(s))" in text
    assert "raise `timeout`" in text
    pve.flaky_network()
    assert only_templates(pve) and "vault" not in cloud.accepted()


def test_a_task_that_does_not_end_in_time_is_stopped_and_the_guest_removed(tmp_path, pve, pve_pki):
    cloud = make_cloud(tmp_path, pve, pve_pki[0], task_timeout=1)
    pve.time_scale = 1.0
    pve.ct_secs["create"] = 2.5
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "creating container 111 on pve: the PVE task did not end within 1.0 s" in text
    assert "was stopped and destroyed" in text
    assert only_templates(pve) and "vault" not in cloud.accepted()
    assert_schema_clean(pve)


def test_an_already_used_vmid_is_refused_before_anything_is_made(pve, cloud):
    other = pve.add_ct(100, "someone-else", node=NODE, status="running")
    text = failed(cloud, "-p", "debian12-lxc", "reverse-proxy")
    assert "VMID 100 is already used by 'someone-else'" in text
    assert "Give site.guests.reverse-proxy.vmid a free VMID" in text
    assert guests(pve)[100] is other and other.status == "running" and other.name == "someone-else"
    assert set(guests(pve)) == {100, TEMPLATE_VMID} and "reverse-proxy" not in cloud.accepted()


def test_a_name_that_matches_two_guests_is_an_error_not_a_guess(pve, cloud):
    first = pve.add_ct(200, "reverse-proxy", node=NODE, status="running")
    second = pve.add_ct(201, "reverse-proxy", node=NODE, status="stopped")
    # salt-cloud itself sees the name in list_nodes and creates nothing (it exits 0 for that).
    out = cloud.run("-p", "debian12-lxc", "reverse-proxy")
    assert "reverse-proxy already exists under platform:proxmox_platform" in out.stdout
    for args in (("-a", "show_instance", "reverse-proxy"), ("-d", "reverse-proxy")):
        out = cloud.run(*args)
        assert "'reverse-proxy' matches 2 guests (VMID 200 on pve, VMID 201 on pve)" in out.stdout + out.stderr
    listed = cloud.json("-Q")["platform"]["proxmox_platform"]
    assert {"reverse-proxy", "reverse-proxy (VMID 201)"} <= set(listed)
    assert guests(pve)[200] is first and guests(pve)[201] is second and first.status == "running"
    assert 100 not in guests(pve)


def test_a_bad_token_says_which_token_and_where_the_secret_comes_from(pve, cloud):
    text = failed(cloud, "-p", "debian12-lxc", "vault", secret="not-the-secret")  # noqa: S106 - a wrong one on purpose
    assert "PVE refused the API token 'salt@pve!platform' (401: authentication failure)" in text
    assert "token_secret_env" in text
    assert only_templates(pve) and "vault" not in cloud.accepted()
    text = failed(cloud, "-p", "debian12-lxc", "vault", secret=None)
    assert "the Proxmox API token secret is not set: export PVE_TOKEN_SECRET=" in text
    assert only_templates(pve)


def test_tls_is_verified(tmp_path, pve):
    cloud = make_cloud(tmp_path, pve, "/etc/ssl/certs/ca-certificates.crt")
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "TLS verification of https://127.0.0.1" in text and "ca_bundle" in text
    assert only_templates(pve) and not pve.requests
