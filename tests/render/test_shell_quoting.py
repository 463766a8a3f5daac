"""No site value reaches a shell unquoted: every Jinja expression in a command a state runs (cmd.*
name, unless, onlyif; check_cmd), in a shell script template and in a unit's Exec line ends with
``| quote`` (shlex.quote: one shell word, whatever the value holds).

Every value in those places comes from pillar (the site, or a role's parameters, which the site
file may override), so none is exempt. A new unquoted interpolation fails here with its file and
line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sitectl import ROOT

pytestmark = pytest.mark.render

EXPRESSION = re.compile(r"{{-?(.*?)-?}}")
QUOTED = re.compile(r"\|\s*quote\s*$")
COMMAND_KEYS = re.compile(r"^\s*- (name|unless|onlyif|check_cmd):")
ANY_KEY = re.compile(r"^\s*- [a-z_]+:")
STATE_FUNCTION = re.compile(r"^\s+([a-z_]+)\.[a-z_]+:\s*$")


# Interpolations a schema restricts to characters that need no quoting, kept as they are written
# (each with the schema that makes it so). Nothing else is exempt.
SCHEMA_SAFE = {
    # a certificate's domain: a route's DNS label under site.domain (sitectl/schemas/site.yaml)
    ("salt/reverse_proxy/certificates.sls", "--domain '{{ name }}'"),
}


def unquoted(line: str, where: str = "") -> list[str]:
    if any(where == path and fragment in line for path, fragment in SCHEMA_SAFE):
        return []
    return [expr.strip() for expr in EXPRESSION.findall(line) if not QUOTED.search(expr.strip())]


def command_lines(sls: Path):
    """(line number, text) of the lines that are commands: cmd.* name/unless/onlyif (with their folded
    continuation lines) and any check_cmd."""
    module, in_command = None, False
    for number, line in enumerate(sls.read_text().splitlines(), start=1):
        function = STATE_FUNCTION.match(line)
        if function:
            module, in_command = function.group(1), False
            continue
        if line.startswith(("{%", "{#")):  # Jinja control inside a state: the command goes on
            continue
        if not line.startswith(" "):
            module, in_command = None, False
            continue
        if ANY_KEY.match(line):
            key = COMMAND_KEYS.match(line)
            in_command = bool(key) and (module == "cmd" or key.group(1) in ("check_cmd", "unless", "onlyif"))
        if in_command:
            yield number, line


def offenders() -> list[str]:
    found = []
    for sls in sorted((ROOT / "salt").glob("*/*.sls")):
        for number, line in command_lines(sls):
            where = str(sls.relative_to(ROOT))
            found += [f"{where}:{number}: {{{{ {e} }}}}" for e in unquoted(line, where)]
    for script in sorted((ROOT / "salt").glob("*/files/*.sh.j2")):
        for number, line in enumerate(script.read_text().splitlines(), start=1):
            if not line.lstrip().startswith("#"):
                found += [f"{script.relative_to(ROOT)}:{number}: {{{{ {e} }}}}" for e in unquoted(line)]
    units = [*(ROOT / "salt").glob("*/files/*.service.j2"), *(ROOT / "salt").glob("*/files/*.unit.j2")]
    for unit in sorted(units):
        for number, line in enumerate(unit.read_text().splitlines(), start=1):
            if line.startswith("Exec"):
                found += [f"{unit.relative_to(ROOT)}:{number}: {{{{ {e} }}}}" for e in unquoted(line)]
    return found


def test_every_value_in_a_command_script_or_exec_line_is_quoted():
    found = offenders()
    assert not found, "unquoted in a shell context (add | quote):\n" + "\n".join(found)


def test_the_scan_sees_commands_folded_over_lines(tmp_path):
    sls = tmp_path / "probe.sls"
    sls.write_text("probe-run:\n  cmd.run:\n    - name: >-\n        tool --safe {{ a | quote }}\n"
                   "        --bad {{ b }}\n    - unless: test -e {{ c }}\n    - cwd: {{ d }}\n")
    lines = dict(command_lines(sls))
    assert unquoted(lines[5]) == ["b"] and unquoted(lines[6]) == ["c"] and 7 not in lines
