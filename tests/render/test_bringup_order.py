"""The bring-up's order, derived from the site, and what it says when it stops (no daemon)."""

from __future__ import annotations

import copy
import io

import pytest

from sitectl import ROOT, bringup, roles, sitefile

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def example() -> dict:
    catalog = sitefile.load(ROOT / "pillar" / "platform" / "roles.sls", "roles.sls")
    site = sitefile.load(ROOT / "pillar" / "site" / "example.sls", "example.sls")
    return roles.merge(catalog, site)


def position(phases: list[list[str]]) -> dict[str, int]:
    return {guest: n for n, guests in enumerate(phases) for guest in guests}


def test_the_example_site_comes_up_vault_data_apps_and_proxy_then_monitoring(example):
    assert bringup.phases(example) == [
        ["vault"],
        ["control", "git-lab-docker-runner", "mailcow", "postgresql", "rabbitmq"],
        ["k3s", "microservices", "nextcloud", "reverse-proxy"],
        ["monitoring"],  # after k3s: the server writes the kubelet scraper's token into Vault
    ]


def test_without_kubelets_to_scrape_monitoring_waits_only_on_what_it_uses(example):
    """The lab: k3s's install part is off, so no kubelet token is waited for; three phases."""
    pillar = roles.merge(example, {"k3s": {"install": {"converge": False, "reason": "no build"}}})
    assert bringup.phases(pillar)[-1] == ["k3s", "microservices", "monitoring", "nextcloud", "reverse-proxy"]
    assert len(bringup.phases(pillar)) == 3


def test_every_guest_comes_after_what_it_uses_and_the_proxy_after_its_mail_guest(example):
    at = position(bringup.phases(example))
    site = example["site"]
    assert set(at) == set(site["guests"]), "every guest of the site is in one phase"
    for name, guest in site["guests"].items():
        for used in guest.get("uses", []):
            assert at[used] < at[name], f"{name} uses {used}"
        if name != "vault":
            assert at["vault"] < at[name]
    # the mail certificate is sealed for the mail guest's minion the moment it is issued
    assert at[site["routes"]["mail"]["guest"]] < at["reverse-proxy"]
    assert at["k3s"] < at["monitoring"]


def test_a_guest_added_to_the_site_lands_after_what_it_uses(example):
    pillar = copy.deepcopy(example)
    pillar["site"]["guests"]["worker"] = {**pillar["site"]["guests"]["microservices"], "vmid": 130,
                                          "address": "10.10.10.130/24", "roles": ["chat"],
                                          "uses": ["postgresql", "rabbitmq"]}
    at = position(bringup.phases(pillar))
    assert at["worker"] == at["microservices"] == 2
    assert at["postgresql"] < at["worker"]


def test_the_order_follows_the_catalogs_needs_not_the_guest_names(example):
    pillar = copy.deepcopy(example)
    guests = pillar["site"]["guests"]
    guests["db2"] = guests.pop("postgresql")
    for guest in guests.values():
        guest["uses"] = ["db2" if u == "postgresql" else u for u in guest.get("uses", [])]
    pillar["roles"]["rabbitmq"] = {**pillar["roles"]["rabbitmq"], "needs": ["postgresql"]}
    at = position(bringup.phases(pillar))
    assert at["db2"] < at["rabbitmq"] < at["microservices"]


def test_relations_that_wait_on_each_other_are_refused_naming_the_guests(example):
    pillar = copy.deepcopy(example)
    pillar["site"]["guests"]["postgresql"]["uses"] = ["nextcloud"]
    with pytest.raises(bringup.OrderError) as err:
        bringup.phases(pillar)
    assert "nextcloud after ['postgresql']" in str(err.value)
    assert "postgresql after ['nextcloud']" in str(err.value)


def test_the_stop_names_the_guest_and_each_failed_state():
    ret = {
        "pkg_|-postgresql-package-installed_|-postgresql_|-installed": {
            "__id__": "postgresql-package-installed", "__sls__": "postgresql.package", "__run_num__": 3,
            "result": False, "changes": {}, "comment": "Unable to locate package postgresql-15"},
        "service_|-postgresql-service-running_|-postgresql_|-running": {
            "__id__": "postgresql-service-running", "__sls__": "postgresql.service", "__run_num__": 4,
            "__state_ran__": False, "result": False, "changes": {}, "comment": "One or more requisite failed"},
        "file_|-common-motd_|-/etc/motd_|-managed": {
            "__id__": "common-motd", "__sls__": "common", "__run_num__": 1, "result": True, "changes": {}},
    }
    summary = bringup.summarize(ret)
    assert (summary["ok"], summary["changed"], summary["failed"]) == (1, 0, 2)
    assert summary["failed_sls"] == ["postgresql.package"], "a state skipped by a failed requisite did not fail itself"
    message = bringup.failure_message("postgresql", summary, 2, 5)
    assert message.startswith("bring-up stopped in phase 2/5: the highstate of postgresql failed (2 failed)")
    assert "postgresql-package-installed (sls postgresql.package): Unable to locate package postgresql-15" in message
    assert message.index("postgresql-package-installed") < message.index("postgresql-service-running")
    assert "run the bring-up again" in message


def test_a_return_that_is_not_a_highstate_is_a_failure():
    summary = bringup.summarize(["Rendering SLS 'base:vault' failed: mapping values are not allowed here"])
    assert summary["failed"] == 1
    assert "Rendering SLS 'base:vault' failed" in bringup.failure_message("vault", summary, 1, 5)


def test_an_uninitialised_vault_stops_with_the_operators_exact_steps():
    message = bringup.vault_operator_message("initialise", "vault", "https://10.10.10.111:8200",
                                             "/etc/vault.d/tls/ca.crt", "example", threshold=2)
    assert "Vault on vault (https://10.10.10.111:8200) is not initialised" in message
    assert ("salt-run salt.cmd vault_server.initialize \"<the operators' public keys, a YAML list>\" "
            "\"<the root-token holder's public key>\" /root/vault-init/example.json secret_threshold=2 "
            "url=https://10.10.10.111:8200 verify=/root/vault-init/ca.crt") in message
    assert "jq -r '.unseal_keys_pgp[N]' /root/vault-init/example.json | base64 -d | gpg -d" in message
    assert ("salt vault state.apply vault.unseal pillar='{\"vault\": {\"unseal\": {\"key_files\": "
            "[\"/run/vault-unseal/<operator>\", ...]}}}'") in message
    assert "vault:/etc/vault.d/tls/ca.crt is the public CA" in message
    assert "restarts the master" in message and "salt-run bringup.up" in message


def test_a_sealed_vault_stops_with_the_unseal_step_only():
    message = bringup.vault_operator_message("unseal", "vault", "https://10.10.10.111:8200",
                                             "/etc/vault.d/tls/ca.crt", "example")
    assert "is sealed" in message and "state.apply vault.unseal" in message
    assert "vault_server.initialize" not in message


def test_a_master_without_its_vault_credentials_stops_with_step_5():
    message = bringup.vault_operator_message("master-credentials", "vault", "https://10.10.10.111:8200",
                                             "/etc/vault.d/tls/ca.crt", "example")
    assert "the master has no AppRole credentials" in message and "vault-master.yaml" in message


class NotATerminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def isatty(self):
        return False

    def flush(self):
        self.flushes += 1
        super().flush()


def test_each_phase_prints_its_start_and_its_end_with_its_time_flushed():
    out, timings = NotATerminal(), {}
    with bringup.phase("guest template", timings, "template", out=out):
        assert out.getvalue().endswith("guest template: started\n") and out.flushes == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and out.flushes == 2
    assert lines[1].endswith(f"guest template: done in {timings['template']:.1f}s")
    with pytest.raises(RuntimeError), bringup.phase("network", out=out):
        raise RuntimeError("bridge busy")
    assert "network: failed after" in out.getvalue().splitlines()[-1]


def test_a_highstate_that_raised_inside_salt_is_run_once_more_and_the_exception_is_kept(capsys):
    """Salt's minion answers "The minion function caused an exception: <traceback>" when state.highstate
    itself raised (no state ran to a result): the bring-up runs that guest's highstate once more, keeps
    the first exception's last line in its result and says so; a guest whose states failed is not run
    again. (The minion is stood in for by its return: Salt cannot be made to raise there on demand.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bringup_runner", ROOT / "_runners" / "bringup.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    traceback = ("The minion function caused an exception: Traceback (most recent call last):\n"
                 "  File \"/opt/saltstack/salt/lib/python3.11/site-packages/salt/minion.py\", line 3240\n"
                 "KeyError: 140578509712256\n")
    raised = bringup.summarize(traceback)
    assert raised["failed"] == 1 and raised["exception"] == "KeyError: 140578509712256"
    assert "exception" not in bringup.summarize(["Rendering SLS 'base:vault' failed"])

    class Minions:
        calls: list = []

        def cmd_iter(self, names, fun, **kwargs):
            self.calls.append((list(names), fun))
            yield {name: {"ret": {"file_|-x_|-/x_|-managed": {"result": True, "changes": {},
                                                              "__run_num__": 0}}} for name in names}

    minions = Minions()
    failed_state = bringup.summarize({"pkg_|-p_|-p_|-installed": {"result": False, "comment": "no", "__sls__": "a"}})
    results = {"vault": {**raised, "action": "created"}, "db": {**failed_state, "action": "created"}}
    runner._again_after_an_exception(minions, results, ["vault", "db"], 60)
    assert minions.calls == [(["vault"], "state.highstate")]
    assert results["vault"]["failed"] == 0 and results["vault"]["ok"] == 1
    assert results["vault"]["retried"] == "KeyError: 140578509712256" and results["vault"]["action"] == "created"
    assert results["db"]["failed"] == 1 and "retried" not in results["db"]
    assert "vault: the highstate raised inside Salt (KeyError: 140578509712256); run once more" in \
        capsys.readouterr().err


def test_guests_created_ahead_are_held_until_their_highstate_or_the_holds_end(tmp_path):
    cachedir = str(tmp_path)
    assert bringup.held(cachedir) == set()
    bringup.hold(cachedir, ["nextcloud", "k3s"], 600)
    assert bringup.held(cachedir) == {"nextcloud", "k3s"}
    hold_file = tmp_path / "platform" / bringup.HOLD_FILE
    assert hold_file.stat().st_mode & 0o777 == 0o600, "the master's cache: root only"
    bringup.release(cachedir, ["k3s"])
    assert bringup.held(cachedir) == {"nextcloud"}
    assert bringup.held(cachedir, now=__import__("time").time() + 601) == set(), "a hold ends at its time"
    bringup.release(cachedir, ["nextcloud"])
    assert not hold_file.exists()
    hold_file.parent.mkdir(exist_ok=True)
    hold_file.write_text("not json")
    assert bringup.held(cachedir) == set(), "a damaged hold holds nothing: the guest is checked as any other"


def _runner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bringup_runner", ROOT / "_runners" / "bringup.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


class _Minions:
    """The LocalClient as the runner uses it: every minion answers, every state is clean."""

    def __init__(self):
        self.calls = []

    def cmd(self, names, fun, **kwargs):
        return {name: True for name in names}

    def cmd_iter(self, names, fun, kwarg=None, **kwargs):
        self.calls.append((sorted(names), fun, kwarg))
        yield {name: {"ret": {"file_|-x_|-/x_|-managed": {"result": True, "changes": {}, "__run_num__": 0}}}
               for name in names}


def test_the_phase_after_vaults_creates_the_later_phases_missing_guests_ahead(example):
    phases = bringup.phases(example)
    assert bringup.created_ahead(phases, 1, set()) == [], "not while Vault's phase ends in a master restart"
    third = [g for later in phases[2:] for g in later]
    assert third and bringup.created_ahead(phases, 2, set()) == third
    assert bringup.created_ahead(phases, 2, {third[0]}) == third[1:], "an existing guest is not created again"
    assert all(bringup.created_ahead(phases, n, set()) == [] for n in range(3, len(phases) + 1))
    assert bringup.created_ahead(phases, 1, set(), vault_converges=False) == [g for p in phases[1:] for g in p]


def test_a_phase_creates_the_later_phases_guests_ahead_and_their_phase_highstates_them_at_once(
        tmp_path, monkeypatch, capsys):
    """A phase hands the later phases' new guests to salt-cloud with its own, held (the provision flow
    gives them their base only); in its phase a held guest gets its highstate with no test=True run
    first, queued behind its base, and is no longer held; a guest that existed before is checked first."""
    runner = _runner()
    runner.__opts__ = {"cachedir": str(tmp_path)}
    created = []

    def create(names, pillar, timeout, held=frozenset()):
        created.append((list(names), set(held)))
        assert bringup.held(str(tmp_path)) >= set(held), "held before salt-cloud fires their created events"
        return {n: {**bringup.summarize({}), "action": "created"} for n in names if n not in held}, None

    monkeypatch.setattr(runner, "_create", create)
    pillar = {"site": {"guests": {"vault": {"roles": ["vault"]}, "db": {"roles": ["postgresql"]},
                                  "web": {"roles": ["nextcloud"]}, "old": {"roles": ["nextcloud"]}}}}
    timeouts = {"answer": 5, "create": 60, "highstate": 60}
    minions, results, existing = _Minions(), {}, {"old"}
    stop = runner._phase(minions, pillar, ["vault"], existing, results, timeouts, False, ["db", "web"])
    assert stop is None and created == [(["vault", "db", "web"], {"db", "web"})]
    assert existing == {"old", "vault", "db", "web"} and set(results) == {"vault"}
    assert minions.calls == [], "no highstate of a held guest before its phase"
    assert "ahead of their phases, db, web (their base now: common.firewall)" in capsys.readouterr().err

    assert runner._phase(minions, pillar, ["db"], existing, results, timeouts, False) is None
    assert minions.calls == [(["db"], "state.highstate", {"queue": True})]
    assert results["db"]["action"] == "created" and bringup.held(str(tmp_path)) == {"web"}

    minions.calls.clear()
    assert runner._phase(minions, pillar, ["old", "web"], existing, results, timeouts, False) is None
    assert minions.calls == [(["web"], "state.highstate", {"queue": True}),
                             (["old"], "state.highstate", {"test": True})]
    assert results["old"]["action"] == "unchanged" and results["web"]["action"] == "created"
    assert bringup.held(str(tmp_path)) == set() and created == [(["vault", "db", "web"], {"db", "web"})]


def test_the_bring_up_waits_for_the_minion_restart_a_first_highstate_scheduled(capsys):
    """A highstate whose common.minion scheduled the minion's restart is flagged; the bring-up asks that
    guest (only) until the restart unit is over, and moves on from a guest that does not answer
    within the time allowed, saying so."""
    runner = _runner()
    restart = {f"cmd_|-{bringup.MINION_RESTART_STATE}_|-systemd-run_|-run": {
        "result": True, "changes": {"pid": 1}, "__id__": bringup.MINION_RESTART_STATE, "__run_num__": 0}}
    assert bringup.summarize(restart).get("restarts_minion") is True
    assert "restarts_minion" not in bringup.summarize({"file_|-x_|-/x_|-managed": {"result": True, "changes": {}}})

    class Restarting:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), []

        def cmd(self, names, fun, arg=(), **kwargs):
            self.calls.append((list(names), fun, list(arg)))
            return self.answers.pop(0) if self.answers else {}

    results = {"vault": {"restarts_minion": True}, "db": {}}
    minions = Restarting([{"vault": {"stdout": "active"}}, {}, {"vault": {"stdout": "inactive", "retcode": 3}}])
    runner._after_minion_restarts(minions, results, ["vault", "db"], 60, pause=0)
    assert minions.calls == [(["vault"], "cmd.run_all", [f"systemctl is-active {bringup.MINION_RESTART_UNIT}"])] * 3

    silent = Restarting([])
    runner._after_minion_restarts(silent, results, ["vault"], 0.05, pause=0.01)
    assert silent.calls and "vault: its minion's restart after its highstate did not finish" in capsys.readouterr().err
