"""The rabbitmq role: rendered for the example site (no daemon), and converged in real LXC guests
against a real OpenBao, checked as a user would: a client guest publishes and consumes with the
password from Vault, is refused elsewhere, a rotated password takes effect without a restart while
another user's connection lives on, and a Vault that refuses or is gone fails the states that need
it, naming the path, while the broker and its files stay as they were."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import secrets
import string
import time

import pytest

from sitectl import ROOT, render
from tests.conftest import state_args
from tests.rabbitmq.amqp import AMQP_HOLD, AMQP_PROBE
from tests.scratchlab import SALT_CACHE_DIR, SALT_LOG, example_site, guest_ip, guest_pillar

SITE_USERS = ("apps", "chat")
COOKIE = ("roles/rabbitmq/erlang-cookie", "cookie")
BROKER, CLIENT = "rabbitmq", "microservices"
SITE = example_site()  # the broker and its client guest at their example addresses' last octet
BROKER_IP = guest_ip(SITE, BROKER)
ROLE_POLICY = """
path "secret/data/roles/rabbitmq/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/roles/rabbitmq/*" { capabilities = ["read", "list"] }
"""


def password_path(user: str) -> str:
    return f"roles/rabbitmq/users/{user}"


# --- rendered for the example site ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_high(example_config):
    high = render.caller(example_config, "rabbitmq").cmd("state.show_sls", "rabbitmq")
    assert isinstance(high, dict), high
    return high


def rendered_file(config, high, state_id) -> str:
    caller = render.caller(config, "rabbitmq")
    conf = state_args(high[state_id], "file")
    template = open(caller.cmd("cp.cache_file", conf["source"])).read()
    return caller.cmd("file.apply_template_on_contents", template, "jinja", conf["context"], None, "base")


@pytest.mark.render
def test_every_listener_is_on_the_internal_address_and_the_erlang_side_on_loopback(example_config, broker_high):
    conf = rendered_file(example_config, broker_high, "rabbitmq-config-file-checked")
    assert "listeners.tcp.1 = 10.10.10.105:5672" in conf
    assert "management.tcp.ip = 10.10.10.105" in conf and "management.tcp.port = 15672" in conf
    assert "prometheus.tcp.ip = 10.10.10.105" in conf and "prometheus.tcp.port = 15692" in conf
    env = rendered_file(example_config, broker_high, "rabbitmq-config-env-managed")
    assert "NODENAME=rabbit@localhost" in env
    assert env.count('"-kernel inet_dist_use_interface {127,0,0,1}"') == 2, "node and CLI"
    epmd = rendered_file(example_config, broker_high, "rabbitmq-config-epmd-socket-managed")
    assert "ListenStream=\nListenStream=127.0.0.1:4369" in epmd
    plugins = state_args(broker_high["rabbitmq-config-plugins-checked"], "file")
    assert plugins["contents"] == "[rabbitmq_management,rabbitmq_prometheus]."


@pytest.mark.render
def test_rabbitmq_conf_and_plugins_are_checked_by_rabbitmq_before_they_replace_the_live_files(broker_high):
    for part, kind in (("file", "conf"), ("plugins", "plugins")):
        checked = state_args(broker_high[f"rabbitmq-config-{part}-checked"], "file")
        assert checked["check_cmd"] == f"/usr/local/sbin/rabbitmq-config-check {kind}"
        live = state_args(broker_high[f"rabbitmq-config-{part}-managed"], "file")
        assert live["source"] == checked["name"] and live["require"] == [f"rabbitmq-config-{part}-checked"]


@pytest.mark.render
def test_only_consumers_admins_and_monitoring_may_reach_the_broker(example_config):
    guest = render.pillar(example_config, "rabbitmq")["platform"]["guest"]
    firewall = {rule["name"]: rule["from"] for rule in guest["firewall"]}
    assert firewall["amqp"] == ["10.10.10.101/32", "10.10.10.112/32"], "microservices and k3s use it"
    assert firewall["rabbitmq-management"] == ["10.10.10.0/24"]
    assert firewall["rabbitmq-prometheus"] == ["10.10.10.120/32"]
    assert not {"epmd", "erlang-distribution"} & set(firewall)


@pytest.mark.render
def test_cookie_comes_from_vault_before_the_package_and_a_change_stops_the_broker_first(broker_high):
    generated = state_args(broker_high["rabbitmq-config-cookie-secret-generated"], "vault_server")
    assert generated["name"] == "roles/rabbitmq/erlang-cookie"
    assert generated["fields"] == {"cookie": {"length": 32, "alphabet": "uppercase"}}
    cookie = state_args(broker_high["rabbitmq-config-cookie-managed"], "file")
    assert cookie["name"] == "/var/lib/rabbitmq/.erlang.cookie" and cookie["mode"] == "0400"
    assert cookie["user"] == "rabbitmq" and cookie["show_changes"] is False
    package = state_args(broker_high["rabbitmq-package-installed"], "pkg")
    assert {"sls": "rabbitmq.config"} in package["require"], "the package comes after every config file"
    for part in ("cookie", "file", "env", "plugins", "epmd-socket"):
        assert broker_high[f"rabbitmq-config-{part}-managed"]["__sls__"] == "rabbitmq.config", part
        stop = state_args(broker_high[f"rabbitmq-config-broker-stopped-for-{part}"], "cmd")
        assert stop["name"] == "systemctl stop rabbitmq-server"
        assert stop["prereq"] == [f"rabbitmq-config-{part}-managed"]
    assert "watch" not in state_args(broker_high["rabbitmq-service-running"], "unit"), "no restart but by prereq"


@pytest.mark.render
def test_site_users_get_vault_passwords_and_exactly_their_permissions(broker_high, example_site):
    messaging = example_site["messaging"]
    for vhost in messaging["vhosts"]:
        assert state_args(broker_high[f"rabbitmq-access-vhost-{vhost}-present"], "rabbitmq_access")["name"] == vhost
    for user, spec in messaging["users"].items():
        generated = state_args(broker_high[f"rabbitmq-access-user-{user}-secret-generated"], "vault_server")
        assert generated["name"] == password_path(user) and "rotate" not in generated
        present = state_args(broker_high[f"rabbitmq-access-user-{user}-present"], "rabbitmq_access")
        assert present["password_path"] == password_path(user)
        assert present["permissions"] == spec["permissions"] and present["tags"] == []
    admin = state_args(broker_high["rabbitmq-access-user-admin-present"], "rabbitmq_access")
    assert admin["tags"] == ["administrator"] and admin["permissions"] == {}
    assert state_args(broker_high["rabbitmq-access-guest-absent"], "rabbitmq_access")["name"] == "guest"
    only = state_args(broker_high["rabbitmq-access-undeclared-users-absent"], "rabbitmq_access")
    assert only["users"] == ["admin", *sorted(messaging["users"])]
    for state_id, state in broker_high.items():  # a password is read when the state runs, never rendered
        for module in (key for key in state if not key.startswith("__")):
            assert "password" not in state_args(state, module), state_id


@pytest.mark.render
def test_the_uppercase_alphabet_makes_erlang_cookies():
    spec = importlib.util.spec_from_file_location("vault_server_module", ROOT / "_modules" / "vault_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {module.generate_value(32, "uppercase") for _ in range(20)}
    assert len(values) == 20
    assert all(len(v) == 32 and set(v) <= set(string.ascii_uppercase) for v in values)


# --- converged in the lab -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit_lab(scratch_lab):
    """The broker and its client guest; the broker's Vault token holds only the role's policy."""
    lab = scratch_lab
    lab.start_guests(SITE, BROKER, CLIENT)
    bao = lab.start_vault()
    bao.policy("salt_role_rabbitmq", ROLE_POLICY)
    lab.push_salt(BROKER, guest_pillar(SITE, BROKER), vault_token=bao.token(["salt_role_rabbitmq"]))
    lab.write_file(CLIENT, "/root/amqp_probe.py", AMQP_PROBE)
    lab.write_file(CLIENT, "/root/amqp_hold.py", AMQP_HOLD)
    lab.apt_install(CLIENT, "python3-pika")
    return lab


@pytest.fixture(scope="module")
def converged(rabbit_lab):
    first = apply(rabbit_lab)
    second = apply(rabbit_lab)
    return first, second


def apply(lab, test: bool = False):
    return lab.apply(BROKER, "rabbitmq", test=test)


def out(lab, guest: str, script: str) -> str:
    return lab.sh(guest, script).stdout


def password(lab, user: str) -> str:
    return lab.bao.read(password_path(user), "password")


def rabbitmqctl(lab, *args: str, input: str | None = None) -> str:
    return lab.attach(BROKER, ["env", "HOME=/var/lib/rabbitmq", "/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", *args],
                      input=input).stdout


def broker_pid(lab) -> str:
    return out(lab, BROKER, "systemctl show -p MainPID --value rabbitmq-server").strip()


def amqp(lab, user: str, secret: str, vhost: str, queue: str = "probe") -> dict:
    """Publish one message and get it back from the client guest; the password goes on stdin."""
    cp = lab.attach(CLIENT, ["python3", "/root/amqp_probe.py", BROKER_IP, vhost, user, queue], input=secret,
                    check=False, timeout=60)
    try:
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"amqp probe printed no result: {cp.stdout} {cp.stderr}") from None


def cookie_state(lab) -> tuple[str, str]:
    return (out(lab, BROKER, "stat -c '%a %U %G' /var/lib/rabbitmq/.erlang.cookie").strip(),
            out(lab, BROKER, "sha256sum /var/lib/rabbitmq/.erlang.cookie").split()[0])


def connect(lab, port: int) -> str:
    code = (f"import socket\ns = socket.socket()\ns.settimeout(3)\n"
            f"print(s.connect_ex(({BROKER_IP!r}, {port})))")
    return "open" if lab.attach(CLIENT, ["python3", "-c", code]).stdout.strip() == "0" else "refused"


@pytest.mark.lab
def test_first_apply_converges_and_the_second_changes_nothing(converged):
    first, second = converged
    assert first.retcode == 0 and first.failed == {}, first.failed
    assert "rabbitmq-package-installed" in first.changed
    assert second.retcode == 0 and second.failed == {} and second.changed == {}, second.changed
    print(f"\nfirst apply {first.seconds} s, second apply {second.seconds} s")


@pytest.mark.lab
def test_listeners_are_internal_and_epmd_and_distribution_are_loopback_only(rabbit_lab, converged):
    lab = rabbit_lab
    listening: dict[int, set[str]] = {}
    for line in out(lab, BROKER, "ss -Hltn").splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        listening.setdefault(int(port), set()).add(address)
    for port in (5672, 15672, 15692):
        assert listening.get(port) == {BROKER_IP}, (port, listening.get(port))
    for port in (4369, 25672):
        assert listening.get(port) == {"127.0.0.1"}, (port, listening.get(port))
    assert connect(lab, 5672) == "open"
    assert connect(lab, 4369) == "refused" and connect(lab, 25672) == "refused"
    metrics = lab.attach(CLIENT, ["python3", "-c", "import urllib.request; print(urllib.request.urlopen("
                                  f"'http://{BROKER_IP}:15692/metrics', timeout=10).read().decode())"]).stdout
    assert re.search(r"^rabbitmq_connections(_opened_total)? ", metrics, re.M), metrics[:500]


MANAGEMENT_PROBE = """
import base64, sys, urllib.error, urllib.request
url, user = sys.argv[1:3]
token = base64.b64encode(f"{user}:{sys.stdin.read()}".encode()).decode()
request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


@pytest.mark.lab
def test_the_management_api_answers_the_admin_with_its_vault_password_only(rabbit_lab, converged):
    lab = rabbit_lab
    url = f"http://{BROKER_IP}:15672/api/whoami"

    def status(user, secret):
        return lab.attach(CLIENT, ["python3", "-c", MANAGEMENT_PROBE, url, user], input=secret).stdout.strip()

    assert status("admin", password(lab, "admin")) == "200"
    assert status("admin", "not-the-password") == "401"
    assert status("chat", password(lab, "chat")) == "401", "a site user has no management tag"


@pytest.mark.lab
def test_guest_is_gone_and_the_cookie_is_the_one_in_vault(rabbit_lab, converged):
    lab = rabbit_lab
    users = rabbitmqctl(lab, "list_users")
    names = {line.split()[0] for line in users.splitlines()[1:]}
    assert names == {"admin", *SITE_USERS}, users
    assert "administrator" in next(line for line in users.splitlines() if line.startswith("admin"))
    mode, digest = cookie_state(lab)
    assert mode == "400 rabbitmq rabbitmq"
    expected = lab.bao.read(*COOKIE)
    assert digest == hashlib.sha256((expected + "\n").encode()).hexdigest()
    assert re.fullmatch(r"[A-Z]{32}", expected)


@pytest.mark.lab
def test_a_client_publishes_and_consumes_on_its_vhost_and_is_refused_elsewhere(rabbit_lab, converged):
    lab = rabbit_lab
    assert amqp(lab, "chat", password(lab, "chat"), "chat") == {"ok": True}
    assert amqp(lab, "apps", password(lab, "apps"), "apps") == {"ok": True}
    other_vhost = amqp(lab, "chat", password(lab, "chat"), "apps")
    assert other_vhost["error"] == "ProbableAccessDeniedError" and "access to vhost 'apps' refused" in \
        other_vhost["detail"].replace("\\'", "'")
    assert amqp(lab, "chat", "not-the-password", "chat")["error"] == "ProbableAuthenticationError"
    assert amqp(lab, "guest", "guest", "/")["error"] == "ProbableAuthenticationError"


@pytest.mark.lab
def test_rotation_changes_the_password_without_a_restart_and_other_connections_survive(rabbit_lab, converged):
    lab = rabbit_lab
    lab.attach(CLIENT, ["sh", "-c", "umask 077 && cat > /root/hold.pw"], input=password(lab, "apps"))
    lab.sh(CLIENT, "rm -f /root/hold.ready /root/hold.go /root/hold.out; "
                   f"nohup python3 /root/amqp_hold.py {BROKER_IP} apps apps held "
                   "</root/hold.pw >/root/hold.out 2>&1 &")
    deadline = time.monotonic() + 30
    while lab.attach(CLIENT, ["test", "-e", "/root/hold.ready"], check=False).returncode:
        assert time.monotonic() < deadline, out(lab, CLIENT, "cat /root/hold.out")
        time.sleep(0.2)
    pid = broker_pid(lab)
    old = password(lab, "chat")
    lab.bao.write(password_path("chat"), password=secrets.token_urlsafe(24))
    new = password(lab, "chat")

    dry = apply(lab, test=True)
    assert dry.states["rabbitmq-access-user-chat-present"]["result"] is None
    assert amqp(lab, "chat", old, "chat") == {"ok": True}, "test=True changed the password"
    rotated = apply(lab)
    assert rotated.failed == {} and list(rotated.changed) == ["rabbitmq-access-user-chat-present"], rotated.changed
    assert list(rotated.states["rabbitmq-access-user-chat-present"]["changes"]) == ["password"]
    assert broker_pid(lab) == pid, "the broker was restarted"
    assert amqp(lab, "chat", new, "chat") == {"ok": True}
    assert amqp(lab, "chat", old, "chat")["error"] == "ProbableAuthenticationError"
    lab.sh(CLIENT, "touch /root/hold.go")
    deadline = time.monotonic() + 30
    while not out(lab, CLIENT, "cat /root/hold.out").strip():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert out(lab, CLIENT, "cat /root/hold.out").strip() == '{"first": true, "second": true}'
    assert apply(lab).changed == {}


@pytest.mark.lab
def test_a_user_the_site_does_not_declare_is_removed(rabbit_lab, converged):
    lab = rabbit_lab
    rabbitmqctl(lab, "add_user", "leftover", input="leftover-password")
    rabbitmqctl(lab, "set_permissions", "-p", "chat", "leftover", ".*", ".*", ".*")
    assert amqp(lab, "leftover", "leftover-password", "chat") == {"ok": True}
    removed = apply(lab)
    assert list(removed.changed) == ["rabbitmq-access-undeclared-users-absent"], removed.changed
    assert removed.states["rabbitmq-access-undeclared-users-absent"]["changes"] == {"deleted": ["leftover"]}
    assert amqp(lab, "leftover", "leftover-password", "chat")["error"] == "ProbableAuthenticationError"


@pytest.mark.lab
def test_a_new_cookie_in_vault_is_written_with_one_controlled_restart(rabbit_lab, converged):
    lab = rabbit_lab
    pid = broker_pid(lab)
    lab.bao.write(COOKIE[0], cookie="".join(secrets.choice(string.ascii_uppercase) for _ in range(32)))
    changed = apply(lab)
    assert changed.failed == {}
    assert list(changed.changed) == ["rabbitmq-config-broker-stopped-for-cookie", "rabbitmq-config-cookie-managed",
                                     "rabbitmq-service-running"], changed.changed
    assert broker_pid(lab) != pid
    assert cookie_state(lab)[1] == hashlib.sha256((lab.bao.read(*COOKIE) + "\n").encode()).hexdigest()
    assert amqp(lab, "chat", password(lab, "chat"), "chat") == {"ok": True}
    assert apply(lab).changed == {}


@pytest.mark.lab
def test_a_config_rabbitmq_refuses_is_never_put_in_place_and_the_broker_keeps_running(rabbit_lab, converged):
    lab = rabbit_lab
    template = "/srv/salt/rabbitmq/files/rabbitmq.conf.j2"
    pid, live = broker_pid(lab), out(lab, BROKER, "cat /etc/rabbitmq/rabbitmq.conf")
    lab.sh(BROKER, f"cp {template} /root/rabbitmq.conf.j2.orig && echo 'listners.tcp.2 = 0.0.0.0:5673' >> {template}")
    try:
        refused = apply(lab)
    finally:
        lab.sh(BROKER, f"mv /root/rabbitmq.conf.j2.orig {template}")
    checked = refused.states["rabbitmq-config-file-checked"]
    assert checked["result"] is False
    assert "Conf file attempted to set unknown variable: listners.tcp.2" in checked["comment"], checked["comment"]
    assert refused.states["rabbitmq-config-file-managed"]["result"] is False
    assert refused.states["rabbitmq-config-broker-stopped-for-file"]["changes"] == {}
    assert broker_pid(lab) == pid and out(lab, BROKER, "cat /etc/rabbitmq/rabbitmq.conf") == live
    assert apply(lab).changed == {}


@pytest.mark.lab
def test_no_secret_in_any_output_log_or_cache(rabbit_lab, converged):
    lab = rabbit_lab
    values = [password(lab, user) for user in ("admin", *SITE_USERS)] + [lab.bao.read(*COOKIE)]
    for applied in lab.applies:
        assert not [v for v in values if v in applied.raw]
    found = lab.attach(BROKER, ["grep", "-rlF", "-f", "-", SALT_CACHE_DIR, SALT_LOG,
                                "/var/log/rabbitmq", "/srv"], input="\n".join(values) + "\n", check=False)
    assert found.returncode == 1 and found.stdout == "", found.stdout


@pytest.mark.lab
@pytest.mark.parametrize("cause", ["refused", "unreachable"])
def test_vault_failing_fails_the_states_naming_the_path_and_changes_nothing(rabbit_lab, converged, cause):
    lab = rabbit_lab
    pid, cookie = broker_pid(lab), cookie_state(lab)
    config = out(lab, BROKER, "find /etc/rabbitmq -type f -exec sha256sum {} + | sort")
    chat = password(lab, "chat")
    if cause == "refused":
        lab.set_vault_token(BROKER, lab.bao.token(["default"]))
        expected = "permission denied"
    else:
        lab.bao.stop()  # last: a dev server forgets everything
        expected = f"Vault at {lab.bao.url} is unreachable"
    failed = apply(lab)
    if cause == "refused":
        lab.set_vault_token(BROKER, lab.bao.token(["salt_role_rabbitmq"]))
    assert failed.retcode != 0
    for path, state_id in ((COOKIE[0], "rabbitmq-config-cookie-secret-generated"),
                           *((password_path(u), f"rabbitmq-access-user-{u}-secret-generated")
                             for u in ("admin", *SITE_USERS))):
        comment = failed.states[state_id]["comment"]
        assert failed.states[state_id]["result"] is False
        assert comment.startswith(f"secret/data/{path}: {expected}"), comment
    assert failed.states["rabbitmq-config-cookie-managed"]["result"] is False
    assert broker_pid(lab) == pid, "a failed Vault read must not stop the broker"
    assert cookie_state(lab) == cookie
    assert out(lab, BROKER, "find /etc/rabbitmq -type f -exec sha256sum {} + | sort") == config
    assert amqp(lab, "chat", chat, "chat") == {"ok": True}
