"""The base state rendered for every guest of the example site, asserting on the rendered states."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from sitectl import ROOT, render
from sitectl.site import MINION_SETTINGS, master_address
from tests.conftest import guest_with_role, load_site, state_args

pytestmark = pytest.mark.render

SITE = load_site()
GUESTS = list(SITE["guests"])


@pytest.fixture(scope="module")
def highstates(example_config):
    return {guest: render.highstate(example_config, guest) for guest in GUESTS}


def rendered_ruleset(config_dir, guest: str) -> str:
    caller = render.caller(config_dir, guest)
    view = caller.cmd("pillar.get", "platform:guest", unmask=True)
    template = (ROOT / "salt/common/files/nftables.conf.j2").read_text()
    out = caller.cmd("file.apply_template_on_contents", template, "jinja", {"guest": view}, None, "base")
    return out


COMMON = {
    "common.apt", "common.upgrades", "common.locale", "common.admins", "common.sshd",
    "common.firewall", "common.node_exporter", "common.journald", "common.minion",
}
# The log shipper applies nothing where the site renders it only (monitoring:alloy:converge false, the lab).
COMMON_OPTIONAL = {"common.log_shipper", "common.grafana_repo"}


def test_every_guest_renders_the_base_state_and_only_its_roles_states(highstates, example_config):
    """The base state everywhere; beyond it exactly the SLS the role catalog names for the guest's
    roles (a role whose states are still empty adds nothing)."""
    pillar = render.pillar(example_config, GUESTS[0])
    catalog, guests = pillar["roles"], pillar["site"]["guests"]
    for guest, high in highstates.items():
        assert isinstance(high, dict), f"{guest}: {high}"
        slss = {state["__sls__"] for state in high.values()}
        assert COMMON <= slss, guest
        roots = {sls.split(".")[0] for role in guests[guest]["roles"] for sls in catalog[role]["states"]}
        # backup.client is the shared client a role's backup part includes (salt/backup/job.jinja).
        extra = {sls.split(".")[0] for sls in slss - COMMON - COMMON_OPTIONAL - {"backup.client"}}
        assert extra == roots, f"{guest}: renders {sorted(extra)}, its roles name {sorted(roots)}"
    def rendered_sls(role: str) -> set[str]:
        return {s["__sls__"] for s in highstates[guest_with_role(SITE, role)].values()}

    assert any(sls.startswith("vault.") for sls in rendered_sls("vault"))
    assert rendered_sls("postgresql") >= {
        f"postgresql.{part}" for part in ("package", "config", "service", "users", "databases", "exporter", "backup")}
    assert rendered_sls("reverse_proxy") >= {
        f"reverse_proxy.{part}" for part in ("package", "config", "service", "certificates", "renewal", "monitoring")}
    assert rendered_sls("rabbitmq") >= {f"rabbitmq.{part}" for part in ("config", "package", "service", "access")}


@pytest.mark.parametrize("guest", GUESTS)
def test_sshd_allows_keys_only_and_is_checked_before_it_replaces_the_config(highstates, guest):
    conf = state_args(highstates[guest]["common-sshd-config-managed"], "file")
    assert "PasswordAuthentication no" in conf["contents"]
    assert "KbdInteractiveAuthentication no" in conf["contents"]
    assert "PermitRootLogin prohibit-password" in conf["contents"]
    assert "Port 22" in conf["contents"]
    assert conf["check_cmd"].startswith("/usr/sbin/sshd -t")


@pytest.mark.parametrize("guest", GUESTS)
def test_admins_from_the_site_get_their_keys_and_sudo(highstates, example_site, guest):
    high = highstates[guest]
    keys = state_args(high["common-admins-user-ops-keys-managed"], "ssh_auth")
    assert keys["ssh_keys"] == example_site["admins"]["ops"]["ssh_keys"]
    sudoers = state_args(high["common-admins-sudoers-managed"], "file")
    assert "%platform-admins ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers["contents"]
    assert sudoers["check_cmd"] == "/usr/sbin/visudo -cf"


def test_every_minion_points_at_the_master_from_the_site(highstates):
    for guest, high in highstates.items():
        conf = state_args(high["common-minion-config-managed"], "file")["contents"]
        assert f"id: {guest}\n" in conf
        assert "master: 10.10.10.110\n" in conf


def minion_states(config_dir, guest: str, **running) -> dict:
    """common.minion rendered as by a minion running with ``running`` (its opts)."""
    return render.caller(config_dir, guest, overrides=running).cmd("state.show_sls", "common.minion")


def test_a_new_guests_minion_already_runs_with_the_sites_settings_and_is_not_restarted(example_config):
    """salt-cloud's drivers write every setting before the first boot (MINION_SETTINGS), so the first
    highstate's file.managed meets a minion that already runs with them: the file is written, no
    restart is scheduled (a restart after each first highstate cost half a minute a phase, and a
    publication sent during it was lost)."""
    high = minion_states(example_config, "postgresql", master="10.10.10.110", **MINION_SETTINGS)
    assert isinstance(high, dict), high
    conf = state_args(high["common-minion-config-managed"], "file")["contents"]
    for key, value in MINION_SETTINGS.items():
        assert yaml.safe_load(conf)[key] == value, key
    assert "common-minion-restart-scheduled" not in high


@pytest.mark.parametrize("setting", ["log_level_logfile", "request_channel_timeout", "master"])
def test_a_setting_the_running_minion_lacks_restarts_it_once_the_file_changes(example_config, setting):
    running = {"master": "10.10.10.110", **MINION_SETTINGS}
    running[setting] = {"log_level_logfile": "debug", "request_channel_timeout": 60, "master": "10.10.10.9"}[setting]
    high = minion_states(example_config, "postgresql", **running)
    restart = high["common-minion-restart-scheduled"]["cmd"]
    assert {"onchanges": [{"file": "common-minion-config-managed"}]} in restart
    assert "platform-salt-minion-restart" in state_args(high["common-minion-restart-scheduled"], "cmd")["name"]


def test_node_exporter_listens_on_the_guests_own_address(highstates):
    conf = state_args(highstates[guest_with_role(SITE, "rabbitmq")]["common-node-exporter-args-managed"],
                      "file")["contents"]
    assert 'ARGS="--web.listen-address=10.10.10.105:9100 ' in conf
    for guest, high in highstates.items():
        address = SITE["guests"][guest]["address"].split("/")[0]
        conf = state_args(high["common-node-exporter-args-managed"], "file")["contents"]
        assert f'ARGS="--web.listen-address={address}:9100 ' in conf, guest


@pytest.mark.parametrize("guest", GUESTS)
def test_timezone_and_locale_come_from_the_site(highstates, guest):
    high = highstates[guest]
    assert state_args(high["common-locale-timezone-linked"], "file")["target"] == "/usr/share/zoneinfo/Europe/Moscow"
    assert "en_US.UTF-8 UTF-8" in state_args(high["common-locale-gen-managed"], "file")["contents"]


@pytest.mark.parametrize(
    ("role", "expected", "absent"),
    [
        ("postgresql",
         ["ip saddr { 10.10.10.101/32, 10.10.10.102/32, 10.10.10.112/32, 10.10.10.120/32 } tcp dport 5432 accept",
          "ip saddr { 10.10.10.120/32 } tcp dport 9187 accept",
          "ip saddr { 10.10.10.0/24 } tcp dport 22 accept"],
         ["dport 80 ", "dport 443 "]),
        ("reverse_proxy",
         ["\t\ttcp dport 80 accept", "\t\ttcp dport 443 accept"],
         ["dport 5432"]),
        ("nextcloud",
         ["# route-nextcloud", "ip saddr { 10.10.10.100/32 } tcp dport 80 accept"],
         ["\t\ttcp dport 80 accept"]),
        ("rabbitmq",
         ["ip saddr { 10.10.10.101/32, 10.10.10.112/32 } tcp dport 5672 accept",
          "ip saddr { 10.10.10.120/32 } tcp dport 15692 accept"],
         ["dport 5432"]),
        ("salt_master",
         ["tcp dport 4505 accept", "tcp dport 4506 accept"],
         ["dport 8200"]),
        ("vault",
         ["tcp dport 8200 accept", "ip saddr { 10.10.10.120/32 } tcp dport 8210 accept"],
         ["saddr { 10.10.10.0/24 } tcp dport 8210"]),
    ],
)
def test_firewall_opens_only_what_the_roles_declare_to_whom_they_declare(example_config, role, expected, absent):
    guest = guest_with_role(SITE, role)
    ruleset = rendered_ruleset(example_config, guest)
    assert "policy drop;" in ruleset
    for line in expected:
        assert line in ruleset, f"{guest}: missing {line!r}\n{ruleset}"
    for fragment in absent:
        assert fragment not in ruleset, f"{guest}: unexpected {fragment!r}"


@pytest.mark.parametrize("guest", ["postgresql", "microservices"])
def test_the_minions_connections_to_the_master_survive_the_rulesets_first_load(example_config, guest):
    """Packets of the minion's connections to the master that conntrack picks up mid-stream (the first
    load of the ruleset happens inside a highstate) pass before the invalid-state drop: from the
    master's Salt ports only, and never a SYN."""
    inbound = rendered_ruleset(example_config, guest).split("chain inbound {", 1)[1]
    line = f"ip saddr {master_address(SITE)} tcp sport {{ 4505, 4506 }} tcp flags & syn == 0 accept"
    assert line in inbound
    assert inbound.index(line) < inbound.index("ct state invalid drop")
    assert inbound.count("sport") == 1, "no other source port is let in"


@pytest.mark.parametrize(("guest", "expected"), [
    ("mailcow", ["meta l4proto tcp ct original proto-dst 25 accept",
                 "meta l4proto tcp ct original proto-dst 993 accept"]),
    ("k3s", ["ip saddr { 10.10.10.0/24, 10.10.10.110/32, 10.10.10.112/32 } meta l4proto tcp ct original proto-dst "
             "6443 accept",
             "ip saddr { 10.10.10.112/32, 10.10.10.120/32 } meta l4proto tcp ct original proto-dst 10250 accept"]),
    ("git-lab-docker-runner", ["ip saddr { 10.10.10.120/32 } meta l4proto tcp ct original proto-dst 9252 accept"]),
])
def test_guests_with_containers_filter_the_forward_path_by_the_same_catalog(example_config, guest, expected):
    ruleset = rendered_ruleset(example_config, guest)
    forward = ruleset.split("chain forward {", 1)[1]
    assert "type filter hook forward priority filter - 10; policy drop;" in forward
    for line in expected:
        assert line in forward, f"{guest}: missing {line!r}\n{forward}"
    assert "ct original proto-dst 5432" not in forward, "only the guest's own openings"


@pytest.mark.parametrize("guest", ["postgresql", "vault", "reverse-proxy"])
def test_guests_without_containers_have_no_forward_chain(example_config, guest):
    assert "chain forward" not in rendered_ruleset(example_config, guest)


def test_rendered_rulesets_are_accepted_by_nft(example_config, tmp_path):
    nft = shutil.which("nft") or "/usr/sbin/nft"
    for guest in GUESTS:
        path = tmp_path / f"{guest}.nft"
        path.write_text(rendered_ruleset(example_config, guest))
        result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{guest}: {result.stderr}"


@pytest.fixture(scope="module")
def lab_config(tmp_path_factory):
    from sitectl.config import SaltSettings, write_config

    return write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("lab-state"), overlay="lab"))


def test_lab_overlay_readdresses_the_site_and_switches_off_what_has_no_build_here(lab_config):
    control = render.pillar(lab_config, guest_with_role(SITE, "salt_master"))["platform"]["guest"]
    assert control["address"] == "10.77.0.110/24"
    assert control["master"] == "10.77.0.1"
    assert "salt_master" in control["disabled_roles"] and "salt_master" not in control["roles"]
    assert not [rule for rule in control["firewall"] if rule["port"] == "4505"], "a switched-off role opens nothing"
    # k3s and mailcow converge in part: the role stays on, the part with no build here is switched off in
    # the role's own parameters (the one convention), and why is said.
    k3s_pillar = render.pillar(lab_config, guest_with_role(SITE, "k3s"))
    assert k3s_pillar["platform"]["guest"]["roles"] == ["base", "k3s"]
    install = k3s_pillar["platform"]["params"]["k3s"]["install"]
    assert install["converge"] is False and "no k3s build is reachable offline" in install["reason"]
    mailcow = render.pillar(lab_config, guest_with_role(SITE, "mailcow"))
    assert mailcow["platform"]["guest"]["roles"] == ["base", "mailcow"]
    assert mailcow["platform"]["params"]["mailcow"]["stack"]["converge"] is False
    assert not [r for r, spec in mailcow["roles"].items() if set(spec) - {"description", "states", "firewall",
                "converge", "reason", "nesting", "needs", "system_users"}], "one way to say 'in part'"
    vault = render.pillar(lab_config, guest_with_role(SITE, "vault"))["platform"]["guest"]
    assert vault["roles"] == ["base", "vault"], "roles with a build here stay on"
    ssh = next(rule for rule in vault["firewall"] if rule["name"] == "ssh")
    assert ssh["from"] == ["10.77.0.1/32"]


def test_a_roles_packages_join_the_base_transaction_and_rabbitmqs_do_not(highstates):
    """A role's packages are installed in the guest's one apt transaction with the base packages (one
    resolver and dpkg run for the guest instead of one per role): the chat service's pinned Go and
    build packages, Nextcloud's, the proxy's, PostgreSQL's (its major in the names), and restic on
    exactly the guests whose highstate has the backup client. RabbitMQ's are not (its broker must
    start after the firewall is loaded), and no other guest installs them."""
    import yaml

    go = yaml.safe_load((ROOT / "salt/chat/defaults.yaml").read_text())["chat"]["go"]["packages"]
    marks = {"chat": "golang-github-lib-pq-dev", "nextcloud": "php8.2-fpm", "reverse_proxy": "certbot",
             "postgresql": "postgresql-15", "rabbitmq": "rabbitmq-server"}
    owners = {guest_with_role(SITE, role): role for role in marks if role != "rabbitmq"}
    with_restic = set()
    for guest, high in highstates.items():
        install = state_args(high["common-apt-packages-installed"], "pkg")
        names = {p if isinstance(p, str) else next(iter(p)) for p in install["pkgs"]}
        assert {"nftables", "sudo"} <= names, guest
        assert {role for role, mark in marks.items() if mark in names} == ({owners[guest]} if guest in owners
                                                                            else set()), guest
        assert ("restic" in names) == ("backup-client-restic-installed" in high), guest
        if "restic" in names:
            with_restic.add(guest)
        assert [req for req in install["require"] if "sls" in req] == [], guest
        pins = [p for p in install["pkgs"] if isinstance(p, dict)]
        assert pins == ([{n: v} for n, v in sorted(go.items())] if owners.get(guest) == "chat" else []), guest
    assert {guest_with_role(SITE, role) for role in ("postgresql", "rabbitmq", "vault", "nextcloud")} <= with_restic
    postgresql = guest_with_role(SITE, "postgresql")
    names = state_args(highstates[postgresql]["common-apt-packages-installed"], "pkg")["pkgs"]
    assert {"postgresql-15", "postgresql-client-15", "prometheus-postgres-exporter"} <= set(names)
    assert state_args(highstates[postgresql]["postgresql-package-installed"], "pkg")["pkgs"] == [
        "postgresql-15", "postgresql-client-15", "prometheus-postgres-exporter"]
    rabbitmq = guest_with_role(SITE, "rabbitmq")
    assert state_args(highstates[rabbitmq]["rabbitmq-package-installed"], "pkg")["name"] == "rabbitmq-server"


def test_postgresql_from_pgdg_leaves_its_packages_to_the_role(example_config):
    """With postgresql:repository pgdg the server's packages need apt.postgresql.org first: the base
    transaction does not name them (postgresql.package installs them after the repository)."""
    guest = guest_with_role(SITE, "postgresql")
    caller = render.caller(example_config, guest)
    high = caller.cmd("state.show_sls", "common.apt,postgresql.package",
                      pillar={"postgresql": {"repository": "pgdg", "version": 16}})
    assert isinstance(high, dict), high
    pkgs = state_args(high["common-apt-packages-installed"], "pkg")["pkgs"]
    assert not [p for p in pkgs if isinstance(p, str) and p.startswith("postgresql")] and "sudo" in pkgs
    assert state_args(high["postgresql-package-installed"], "pkg")["pkgs"][:2] == [
        "postgresql-16", "postgresql-client-16"]
    assert "postgresql-package-pgdg-repo-managed" in high


def test_a_go_tarball_leaves_go_to_the_chat_role(example_config):
    """With chat:go:archive set, Go comes from the tarball: the base transaction installs neither
    Debian's Go nor the build packages (the role's own states do)."""
    caller = render.caller(example_config, guest_with_role(SITE, "chat"))
    archive = {"url": "salt://chat/go.tar.gz", "sha256": "0" * 64}
    high = caller.cmd("state.show_sls", "common.apt", pillar={"chat": {"go": {"archive": archive}}})
    assert isinstance(high, dict), high
    pkgs = state_args(high["common-apt-packages-installed"], "pkg")["pkgs"]
    assert all(isinstance(p, str) for p in pkgs) and "golang-github-lib-pq-dev" not in pkgs and "sudo" in pkgs
