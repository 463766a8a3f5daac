"""The alert rules, checked and unit-tested with the real promtool (Debian's `prometheus` package).

rules_test.yml holds, per rule, a sick series and a healthy one; promtool fails if the rule misses
the first or fires on the second. A rule without a test fails here too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sitectl import ROOT

RULES = ROOT / "salt" / "monitoring" / "files" / "platform.rules.yml"
TESTS = Path(__file__).with_name("rules_test.yml")

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) is not installed")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False, cwd=TESTS.parent)


def test_rules_pass_promtool_check():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_on_its_series_and_is_silent_on_a_healthy_one():
    result = _promtool("test", "rules", TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_unit_test():
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert rules == tested, f"untested rules: {sorted(rules - tested)}; tests of no rule: {sorted(tested - rules)}"


def test_a_broken_rule_fails_the_unit_tests(tmp_path):
    """The suite can fail: a rule whose threshold is off no longer matches its test."""
    broken = tmp_path / "platform.rules.yml"
    broken.write_text(RULES.read_text().replace("pg_up == 0", "pg_up == 2"))
    spec = yaml.safe_load(TESTS.read_text())
    spec["rule_files"] = [str(broken)]
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(spec))
    result = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], capture_output=True, text=True,
                            check=False, cwd=tmp_path)
    assert result.returncode != 0 and "PostgresqlDown" in result.stdout + result.stderr
