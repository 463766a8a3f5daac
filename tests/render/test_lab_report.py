"""The lab's reading of a highstate return: what failed, and where (no daemon)."""

from __future__ import annotations

import pytest

from sitectl.labctl import WAITS_FOR_OPERATOR, RunResult

pytestmark = pytest.mark.render


def state(sls: str, result, ran: bool = True, changes=None, comment: str = "") -> dict:
    ret = {"__sls__": sls, "__id__": f"{sls}-state", "result": result, "changes": changes or {}, "comment": comment}
    if not ran:
        ret["__state_ran__"] = False
    return ret


def test_a_vault_waiting_for_its_operator_fails_only_in_the_unseal_sls():
    ret = {
        "a": state("vault.unseal", False, comment="Vault at https://127.0.0.1:8200 is not initialised"),
        "b": state("vault.configure", False, ran=False, comment="One or more requisite failed"),
        "c": state("common.apt", True),
        "d": state("vault.config", True, changes={"diff": "new"}),
    }
    result = RunResult.from_return(ret, 1.0)
    assert (result.ok, result.changed, result.failed) == (1, 1, 2)
    assert result.failed_sls == {"vault.unseal"}, "a state skipped for a failed requisite is not a failure of its own"
    assert not result.failed_sls - WAITS_FOR_OPERATOR


def test_a_failure_elsewhere_is_its_own():
    ret = {"a": state("vault.unseal", False), "b": state("vault.package", False, comment="apt failed")}
    result = RunResult.from_return(ret, 1.0)
    assert result.failed_sls - WAITS_FOR_OPERATOR == {"vault.package"}


def test_a_return_that_is_not_a_highstate_is_a_failure():
    result = RunResult.from_return(["Rendering SLS 'base:vault' failed"], 1.0)
    assert result.failed == 1 and "Rendering SLS" in result.errors[0]


def test_the_table_lists_roles_in_part_and_dashes_a_guest_without_a_run():
    import io
    from types import SimpleNamespace

    from sitectl.labctl import print_table

    pillar = {"site": {"guests": {
        "runner": {"roles": ["gitlab_runner"], "address": "10.0.0.7/24", "kind": "lxc"},
        "new": {"roles": ["rabbitmq"], "address": "10.0.0.8/24", "kind": "lxc"}}},
        "roles": {"gitlab_runner": {}, "rabbitmq": {}, "k3s": {"converge": False, "reason": "no build"}},
        "gitlab_runner": {"install": {"converge": False, "reason": "GitLab Runner does not: no apt repository"}}}
    out = io.StringIO()
    lab = SimpleNamespace(guests=["new", "runner"], pillar=pillar,
                          converges=lambda role: pillar["roles"][role].get("converge", True) is not False)
    print_table(lab, {"runner": RunResult(ok=3, seconds=1.0)},
                {}, out=out, columns=("test=True", "highstate"))
    text = out.getvalue()
    assert "test=True ok/chg/fail" in text and "highstate ok/chg/fail" in text
    new = next(line for line in text.splitlines() if line.startswith("new "))
    assert new.split()[-4:] == ["-", "-", "-", "-"], new
    runner = next(line for line in text.splitlines() if line.startswith("runner "))
    assert "3/0/0" in runner and runner.split()[-2:] == ["-", "-"]
    off, partly = text.split("not converged in the lab")[1].split("converged in part")
    assert "k3s" in off and "no build" in off and "gitlab_runner" not in off
    line = next(line for line in partly.splitlines() if "gitlab_runner.install" in line)
    assert line.split()[:3] == ["gitlab_runner.install", "on", "runner"]
    assert "GitLab Runner does not: no apt repository" in line
