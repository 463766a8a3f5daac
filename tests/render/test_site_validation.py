"""The site is checked before anything runs: every fixture site through Salt's real pillar compiler.

Each invalid fixture folder holds the site and the message it must produce (expected.txt); the
message must name the key path and what is expected. Valid fixtures must compile with no error.
"""

from __future__ import annotations

import base64
import secrets
import string
import subprocess
import uuid

import pytest
import yaml

from sitectl import render
from sitectl import site as site_rules
from tests.conftest import SITES, make_checkout

pytestmark = pytest.mark.render

INVALID = sorted(p.name for p in (SITES / "invalid").iterdir())
VALID = sorted(p.name for p in (SITES / "valid").iterdir())


def private_key_line(tmp_path) -> str:
    """The first lines of a private key made for this run (no key is ever stored in the repository)."""
    key = tmp_path / "throwaway"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    lines = key.read_text().splitlines()
    return f"{lines[0]} {lines[1]}"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# The secret-shaped values the invalid fixtures name by placeholder, made up at run time in each shape
# (nothing secret-looking is stored in the repository). The markers are split so that no file holds one.
FAKE_SECRETS = {
    "__PGP_PRIVATE_KEY_BLOCK__": lambda: ("-----BEGIN PGP " + "PRIVATE KEY BLOCK----- "
                                          + base64.b64encode(secrets.token_bytes(48)).decode()),
    "__GITLAB_TOKEN__": lambda: "gl" + "pat-" + _random(string.ascii_letters + string.digits + "_-", 20),
    "__LEGACY_VAULT_TOKEN__": lambda: "s" + "." + _random(string.ascii_letters + string.digits, 24),
    "__CLOUD_ACCESS_KEY__": lambda: "AK" + "IA" + _random(string.ascii_uppercase + "234567", 16),
    "__PROXMOX_TOKEN_UUID__": lambda: str(uuid.uuid4()),
}


def compile_pillar(tmp_path, folder, minion_id="control", substitutions=None):
    site = (folder / "site.sls").read_text()
    substitutions = dict(substitutions or {})
    if "__PRIVATE_KEY_LINE__" in site and "__PRIVATE_KEY_LINE__" not in substitutions:
        substitutions["__PRIVATE_KEY_LINE__"] = private_key_line(tmp_path)
    for placeholder, make in FAKE_SECRETS.items():
        if placeholder in site and placeholder not in substitutions:
            substitutions[placeholder] = make()
    for placeholder, value in substitutions.items():
        site = site.replace(placeholder, value)
    source = tmp_path / "site.sls"
    source.write_text(site)
    _, conf = make_checkout(tmp_path, source, site_name="fixture")
    return render.pillar(conf, minion_id)


@pytest.mark.parametrize("case", INVALID)
def test_invalid_site_is_refused_with_its_message(tmp_path, case):
    folder = SITES / "invalid" / case
    expected = (folder / "expected.txt").read_text().strip()
    data = compile_pillar(tmp_path, folder)
    errors = "\n".join(data.get("_errors", []))
    assert "the site description is invalid" in errors
    assert expected in errors
    assert "platform" not in data, "an invalid site must not yield a guest view"


def cloud_address(case: str) -> str:
    """The address of the fixture's Nextcloud guest (the one guest that uses db), as a /32."""
    guests = yaml.safe_load((SITES / "valid" / case / "site.sls").read_text())["site"]["guests"]
    return guests["cloud"]["address"].split("/")[0] + "/32"


@pytest.mark.parametrize("case", VALID)
def test_valid_site_compiles_and_gives_each_guest_its_view(tmp_path, case):
    data = compile_pillar(tmp_path, SITES / "valid" / case, minion_id="db")
    assert "_errors" not in data, data.get("_errors")
    guest = data["platform"]["guest"]
    assert guest["name"] == "db"
    assert guest["roles"] == ["base", "postgresql"]
    assert guest["states"] == ["common", "postgresql"]
    postgres = next(rule for rule in guest["firewall"] if rule["name"] == "postgresql")
    assert postgres["from"] == [cloud_address(case)], "only the guest that uses db may reach 5432"


def test_a_minion_outside_the_site_gets_no_guest_view(tmp_path):
    data = compile_pillar(tmp_path, SITES / "valid" / "small", minion_id="stranger")
    assert "_errors" not in data
    assert data["platform"]["guest"] is None


def test_literal_secret_value_never_appears_in_the_error(tmp_path):
    data = compile_pillar(tmp_path, SITES / "invalid" / "literal-secret-in-role-pillar")
    assert "correct-horse-battery" not in "\n".join(data["_errors"])


def test_literal_secret_pasted_into_the_site_is_not_echoed(tmp_path):
    data = compile_pillar(tmp_path, SITES / "invalid" / "literal-secret")
    assert "5f1c2a9e" not in "\n".join(data["_errors"])


def test_private_key_pasted_into_the_site_is_not_echoed(tmp_path):
    line = private_key_line(tmp_path)
    data = compile_pillar(tmp_path, SITES / "invalid" / "private-key-as-ssh-key",
                          substitutions={"__PRIVATE_KEY_LINE__": line})
    errors = "\n".join(data["_errors"])
    assert "got a PEM private key (not shown)" in errors
    assert line.split()[-1][:20] not in errors


SECRET_CASES = sorted(case for case in INVALID if case.startswith("secret-"))


@pytest.mark.parametrize("case", SECRET_CASES)
def test_a_secret_in_any_shape_under_any_key_is_refused_and_not_echoed(tmp_path, case):
    folder = SITES / "invalid" / case
    site = (folder / "site.sls").read_text()
    placeholder = next(p for p in FAKE_SECRETS if p in site)
    value = FAKE_SECRETS[placeholder]()
    data = compile_pillar(tmp_path, folder, substitutions={placeholder: value})
    errors = "\n".join(data["_errors"])
    assert (folder / "expected.txt").read_text().strip() in errors
    assert value not in errors and value[-12:] not in errors, "the secret must not be echoed"


@pytest.mark.parametrize("prefix", site_rules._GITLAB_PREFIXES)
def test_every_documented_gitlab_token_prefix_is_recognised(prefix):
    token = f"{prefix}-" + _random(string.ascii_letters + string.digits, 20)
    errors = site_rules.secret_errors({"note": f"runner {token}"}, "site")
    assert errors == ["site.note: contains a GitLab token; expected a Vault reference 'vault:<path>#<field>' "
                      "(no secret may be written into pillar)"]


@pytest.mark.parametrize("harmless", [
    "s.example.org", "vault.s.example", "glpat", "a 12345678-1234-1234-1234-123456789abc UUID alone",
    "AKIA is a prefix", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 alice@example.org",
])
def test_values_that_only_look_alike_are_not_secrets(harmless):
    assert site_rules.secret_errors({"description": harmless}, "site") == []


def _catalog() -> dict:
    from sitectl import ROOT

    return yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]


def _one_guest(*roles: str) -> dict:
    return {"guests": {"g": {"roles": list(roles)}}}


def test_roles_that_both_open_a_port_cannot_share_a_guest_but_one_service_may_serve_two_roles():
    catalog = _catalog()
    assert site_rules._port_conflict_errors(_one_guest("k3s", "reverse_proxy"), catalog) == [
        "site.guests.g.roles: the roles k3s and reverse_proxy both open tcp port 80 (k3s: ingress-http, "
        "reverse_proxy: http in the role catalog) and cannot share a guest; expected them on two guests (for "
        "example reverse_proxy on a guest of its own)"]
    # The two runners are one gitlab_runner service (the same state): its metrics port once.
    assert site_rules._port_conflict_errors(_one_guest("deploy_runner", "gitlab_runner"), catalog) == []
    assert site_rules._port_conflict_errors(_one_guest("postgresql", "rabbitmq", "vault"), catalog) == []


def test_a_port_range_overlapping_another_roles_port_is_a_conflict_and_udp_is_not_tcp():
    catalog = {
        "a": {"states": ["a"], "firewall": [{"name": "media", "port": "10000-10100", "proto": "udp"}]},
        "b": {"states": ["b"], "firewall": [{"name": "turn", "port": 10050, "proto": "udp"}]},
        "c": {"states": ["c"], "firewall": [{"name": "web", "port": 10050}]},
    }
    errors = site_rules._port_conflict_errors(_one_guest("a", "b", "c"), catalog)
    assert errors == ["site.guests.g.roles: the roles a and b both open udp port 10050 (a: media, b: turn in the "
                      "role catalog) and cannot share a guest; expected them on two guests (for example b on a "
                      "guest of its own)"]
