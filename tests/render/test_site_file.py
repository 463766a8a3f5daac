"""The site file is data: read as plain YAML by the master's ext_pillar, never rendered as Jinja;
YAML mistakes named by file, line and column; hostile shapes refused fast; one message, printed once."""

from __future__ import annotations

import copy
import random
import time

import pytest
import yaml

from sitectl import ROOT, cli, render, site, sitefile
from tests.conftest import SITES, make_checkout

pytestmark = pytest.mark.render

SMALL = (SITES / "valid" / "small" / "site.sls").read_text()


def compile_text(tmp_path, text: str, minion_id: str = "db") -> dict:
    source = tmp_path / "site.sls"
    source.write_text(text)
    _, conf = make_checkout(tmp_path, source, site_name="fixture")
    return render.pillar(conf, minion_id)


def test_jinja_in_a_site_file_is_a_string_never_run(tmp_path):
    marker = tmp_path / "ran-on-the-master"
    code = f"{{{{ salt['file.touch']('{marker}') }}}}"
    text = SMALL.replace("      roles: [postgresql]\n", f"      roles: [postgresql]\n      description: \"{code}\"\n",
                         1)
    data = compile_text(tmp_path, text)
    assert "_errors" not in data, data.get("_errors")
    assert data["site"]["guests"]["db"]["description"] == code, "the value stays the string it is"
    assert not marker.exists(), "a site file's Jinja must never run on the master"


@pytest.mark.parametrize(("mistake", "text", "expected"), [
    ("tab", SMALL.replace("  domain: example.org", "\tdomain: example.org"),
     "pillar/site/fixture.sls:3:1: found character '\\t' that cannot start any token"),
    ("duplicate key", SMALL.replace("  domain: example.org\n", "  domain: example.org\n  domain: example.net\n"),
     "pillar/site/fixture.sls:4:3: duplicate key 'domain' (first at line 3, column 3); expected each key once"),
    ("unclosed quote", SMALL.replace("  domain: example.org", "  domain: 'example.org"),
     "(while scanning a quoted scalar from line 3, column 11)"),
    ("unquoted number key", SMALL.replace("    db:\n", "    101:\n"),
     "pillar/site/fixture.sls:20:5: the key '101' is read as a number; expected a string key (quote it: '101')"),
    ("boolean key", SMALL.replace("    db:\n", "    on:\n"),
     "the key 'on' is read as a boolean (YAML reads yes/no/on/off so)"),
])
def test_yaml_mistakes_name_file_line_and_column_once(tmp_path, mistake, text, expected):
    data = compile_text(tmp_path, text)
    assert len(data["_errors"]) == 1, data["_errors"]
    [error] = data["_errors"]
    assert error.startswith("the site description is unreadable: pillar/site/fixture.sls:"), error
    assert expected in error, f"{mistake}: {error}"
    assert "Traceback" not in error and "platform" not in data


def test_an_alias_bomb_and_an_oversized_file_are_refused_fast(tmp_path):
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = tmp_path / "bomb.sls"
    bomb.write_text("\n".join(levels) + "\n")
    start = time.perf_counter()
    with pytest.raises(sitefile.SiteFileError, match=r"bomb.sls:1:1: aliases expand it to \d+ nodes; expected at most"):
        sitefile.load(bomb)
    big = tmp_path / "big.sls"
    big.write_text("site:\n" + "#" * (sitefile.MAX_BYTES + 1) + "\n")
    with pytest.raises(sitefile.SiteFileError, match=r"big.sls: \d+ bytes; expected a site file of at most"):
        sitefile.load(big)
    assert time.perf_counter() - start < 0.5


def test_the_example_site_and_catalog_load_as_plain_yaml():
    example = sitefile.load(ROOT / "pillar" / "site" / "example.sls")
    assert example == yaml.safe_load((ROOT / "pillar" / "site" / "example.sls").read_text())
    assert "base" in sitefile.load(ROOT / "pillar" / "platform" / "roles.sls")["roles"]


def test_keys_and_values_of_any_type_never_crash_the_validator():
    base = {"site": yaml.safe_load((ROOT / "pillar" / "site" / "example.sls").read_text())["site"],
            "roles": yaml.safe_load((ROOT / "pillar" / "platform" / "roles.sls").read_text())["roles"]}

    def paths(node, prefix=()):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))

    every = list(paths(base))
    rng = random.Random(13)  # noqa: S311 - a reproducible fuzz, not a secret
    odd = [1, True, None, 2.5, [], {}, "", {"a": 1}, [1, "a"], -1, "10.0.0.1/33", 10**30]
    for _ in range(400):
        pillar = copy.deepcopy(base)
        where = rng.choice(every)
        parent = pillar
        for part in where[:-1]:
            parent = parent[part]
        weird = rng.choice(odd)
        if isinstance(parent, dict) and rng.random() < 0.5:
            parent[weird if isinstance(weird, (int, float, bool, type(None))) else 7] = parent.pop(where[-1])
        else:
            parent[where[-1]] = weird
        errors = site.validate(pillar)  # never raises
        assert all(isinstance(e, str) and ": " in e for e in errors), errors


def test_validate_prints_one_message_once_without_a_traceback(tmp_path, capsys):
    source = tmp_path / "site.sls"
    source.write_text((SITES / "invalid" / "duplicate-vmid" / "site.sls").read_text())
    _, conf = make_checkout(tmp_path, source, site_name="fixture")
    cli._quiet_salt()
    assert cli.validate_config(conf, "fixture") == 1
    out = capsys.readouterr()
    assert out.err.count("site.guests.db.vmid: 100 is already used by site.guests.control") == 1, out.err
    assert out.err.count("the site description is invalid") == 1
    assert "Traceback" not in out.err and "ext_pillar" not in out.err
