"""The k3s role in a real LXC guest of the scratch lab, as the lab converges it: everything up to the
binary (the LXC prerequisites, the packages, the config from the site), the binary itself, its
service and the cluster NOT converged (no k3s build is reachable here), said in the run's output.

This is L3 for those parts only: nothing here runs k3s."""

from __future__ import annotations

import pytest

from tests.scratchlab import guest_pillar, scratch_site

pytestmark = pytest.mark.lab

REASON = "no k3s build is reachable offline (GitHub releases only)"
SITE = scratch_site({"k3s": {"host": 12, "roles": ["k3s"]}})
LAB_PARAMS = {"k3s": {"install": {"converge": False, "reason": REASON}}}


@pytest.fixture(scope="module")
def k3s_lab(scratch_lab):
    lab = scratch_lab
    lab.start_guests(SITE, "k3s")
    lab.push_salt("k3s", guest_pillar(SITE, "k3s", extra=LAB_PARAMS))
    return lab


@pytest.fixture(scope="module")
def converged(k3s_lab):
    dry = k3s_lab.apply("k3s", "k3s", test=True)
    first = k3s_lab.apply("k3s", "k3s")
    second = k3s_lab.apply("k3s", "k3s")
    return dry, first, second


def test_everything_up_to_the_binary_converges_and_the_second_run_changes_nothing(converged):
    dry, first, second = converged
    assert dry.retcode == 0 and not [i for i, r in dry.states.items() if r["result"] is False], dry.failed
    assert first.retcode == 0 and first.failed == {}, first.failed
    assert {"k3s-config-file-managed", "k3s-prerequisites-kmsg-tmpfiles-managed",
            "k3s-prerequisites-packages-installed"} <= set(first.changed)
    assert second.retcode == 0 and second.failed == {} and second.changed == {}, second.changed
    print(f"\ntest mode {dry.seconds} s, first apply {first.seconds} s, second apply {second.seconds} s")


def test_the_run_says_what_is_not_converged_and_why(converged):
    _, first, _ = converged
    notice = first.states["k3s-binary-not-installed"]["comment"]
    assert "k3s v1.34.2+k3s1 is NOT installed here" in notice and REASON in notice
    assert not [i for i in first.states if i.startswith(("k3s-service", "k3s-cluster", "k3s-binary-installed"))]


def test_the_guest_has_the_config_and_what_the_kubelet_needs_and_no_k3s(k3s_lab, converged):
    config = k3s_lab.sh("k3s", "stat -c '%a %U' /etc/rancher/k3s/config.yaml && cat /etc/rancher/k3s/config.yaml")
    mode, _, body = config.stdout.partition("\n")
    assert mode == "600 root", "k3s's config is root's only"
    ip = SITE["guests"]["k3s"]["address"].split("/")[0]
    assert f"node-ip: {ip}" in body and f"advertise-address: {ip}" in body and "token" not in body
    assert k3s_lab.sh("k3s", "test -e /dev/kmsg && echo present").stdout.strip() == "present"
    assert k3s_lab.sh("k3s", "command -v conntrack iptables").returncode == 0
    absent = k3s_lab.sh("k3s", "test -e /usr/local/bin/k3s || test -e /etc/systemd/system/k3s.service",
                        check=False)
    assert absent.returncode != 0, "nothing of k3s itself may be there"
