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


def test_the_table_lists_partial_roles_and_dashes_a_guest_without_a_run():
    import io
    from types import SimpleNamespace

    from sitectl.labctl import print_table

    pillar = {"site": {"guests": {
        "runner": {"roles": ["gitlab_runner"], "address": "10.0.0.7/24", "kind": "lxc"},
        "new": {"roles": ["rabbitmq"], "address": "10.0.0.8/24", "kind": "lxc"}}},
        "roles": {"gitlab_runner": {"partial": "Docker converges; GitLab Runner does not"},
                  "k3s": {"converge": False, "reason": "no build"}}}
    out = io.StringIO()
    print_table(SimpleNamespace(guests=["new", "runner"], pillar=pillar), {"runner": RunResult(ok=3, seconds=1.0)},
                {}, out=out, columns=("test=True", "highstate"))
    text = out.getvalue()
    assert "test=True ok/chg/fail" in text and "highstate ok/chg/fail" in text
    new = next(line for line in text.splitlines() if line.startswith("new "))
    assert new.split()[-4:] == ["-", "-", "-", "-"], new
    runner = next(line for line in text.splitlines() if line.startswith("runner "))
    assert "3/0/0" in runner and runner.split()[-2:] == ["-", "-"]
    assert "converged in part in the lab" in text and "gitlab_runner  on runner" in text
    assert "Docker converges; GitLab Runner does not" in text
