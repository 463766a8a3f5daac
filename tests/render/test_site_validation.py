"""The site is checked before anything runs: every fixture site through Salt's real pillar compiler.

Each invalid fixture folder holds the site and the message it must produce (expected.txt); the
message must name the key path and what is expected. Valid fixtures must compile with no error.
"""

from __future__ import annotations

import subprocess

import pytest

from sitectl import render
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


def compile_pillar(tmp_path, folder, minion_id="control", substitutions=None):
    site = (folder / "site.sls").read_text()
    substitutions = dict(substitutions or {})
    if "__PRIVATE_KEY_LINE__" in site and "__PRIVATE_KEY_LINE__" not in substitutions:
        substitutions["__PRIVATE_KEY_LINE__"] = private_key_line(tmp_path)
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


@pytest.mark.parametrize("case", VALID)
def test_valid_site_compiles_and_gives_each_guest_its_view(tmp_path, case):
    data = compile_pillar(tmp_path, SITES / "valid" / case, minion_id="db")
    assert "_errors" not in data, data.get("_errors")
    guest = data["platform"]["guest"]
    assert guest["name"] == "db"
    assert guest["roles"] == ["base", "postgresql"]
    assert guest["states"] == ["common", "postgresql"]
    postgres = next(rule for rule in guest["firewall"] if rule["name"] == "postgresql")
    assert postgres["from"] == ["192.168.50.12/32"], "only the guest that uses db may reach 5432"


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
