"""The tree's ``jinja`` renderer (_renderers/jinja.py) keeps each template's compiled code by its
exact content: a run compiles only what it has not compiled before, an edited template renders its
new text at once, damaged kept code is compiled again, a file imported by several SLS is fetched
once a run, and a broken template fails with Salt's own error. (That every SLS of every example
guest renders exactly as through Salt's renderer is checked in tests/render/test_discovery.py.)"""

from __future__ import annotations

import marshal
from pathlib import Path

import jinja2
import pytest
import salt.client
import salt.config
import salt.utils.jinja

from sitectl import ROOT

pytestmark = pytest.mark.render

MAP = '{%- set value = "VALUE" %}\n'
SLS = '{%- from "probe/map.jinja" import value %}\nprobe-NAME:\n  test.nop:\n    - value: {{ value }}\n'


@pytest.fixture
def tree(tmp_path) -> Path:
    roots = tmp_path / "roots"
    (roots / "probe").mkdir(parents=True)
    (roots / "probe" / "map.jinja").write_text(MAP.replace("VALUE", "one"))
    for name in ("a", "b"):
        (roots / "probe" / f"{name}.sls").write_text(SLS.replace("NAME", name))
    return tmp_path


def run(tree: Path, sls: str = "probe.a,probe.b", ours: bool = True):
    """One run, as a state run has it: a new masterless minion (its own loaders), the sls rendered."""
    opts = salt.config.minion_config(None)
    state = tree / "state"
    opts.update({
        "id": "probe", "__cli": "salt-call", "file_client": "local",
        "file_roots": {"base": [str(tree / "roots")]}, "pillar_roots": {"base": [str(tree / "pillar")]},
        "root_dir": str(state), "cachedir": str(state / "cache"), "pki_dir": str(state / "pki"),
        "sock_dir": str(state / "run"), "log_file": str(state / "log"),
        "extension_modules": str(state / "cache" / "extmods"),
        "render_dirs": [str(ROOT / "_renderers")] if ours else [],
    })
    return salt.client.Caller(mopts=opts).cmd("state.show_sls", sls)


def values(rendered: dict) -> dict:
    assert isinstance(rendered, dict), rendered
    return {sid: next(arg["value"] for arg in body["test"] if isinstance(arg, dict) and "value" in arg)
            for sid, body in rendered.items()}


def kept(tree: Path) -> list[Path]:
    code_dir = tree / "state" / "cache" / "platform-jinja"
    return sorted(code_dir.iterdir()) if code_dir.is_dir() else []


@pytest.fixture
def compiles(monkeypatch) -> list[str]:
    """Every template Jinja itself compiles (what the kept code saves)."""
    names: list[str] = []
    real = jinja2.Environment.compile

    def counted(self, source, name=None, filename=None, raw=False, defer_init=False):
        names.append(name or "<sls>")
        return real(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", counted)
    return names


def test_a_run_compiles_only_what_no_run_compiled_before(tree, compiles):
    assert values(run(tree)) == {"probe-a": "one", "probe-b": "one"}
    # Both SLS and the map they import, the map once although two SLS import it.
    assert sorted(compiles) == ["<sls>", "<sls>", "probe/map.jinja"]
    assert len(kept(tree)) == 3
    compiles.clear()
    assert values(run(tree)) == {"probe-a": "one", "probe-b": "one"}
    assert compiles == [], "the second run compiled again"
    # Salt's own renderer, for the same tree, compiles everything every time (the count is real).
    assert values(run(tree, ours=False)) == {"probe-a": "one", "probe-b": "one"}
    assert sorted(compiles) == ["<sls>", "<sls>", "probe/map.jinja", "probe/map.jinja"]


def test_a_run_asks_for_an_imported_file_once_and_the_next_run_again(tree, monkeypatch):
    asked: list[str] = []
    real = salt.utils.jinja.SaltCacheLoader.cache_file

    def counted(self, template):
        asked.append(template)
        return real(self, template)

    monkeypatch.setattr(salt.utils.jinja.SaltCacheLoader, "cache_file", counted)
    run(tree)
    assert asked == ["probe/map.jinja"]
    run(tree)
    assert asked == ["probe/map.jinja"] * 2, "the next run did not ask for the file again"
    asked.clear()
    run(tree, ours=False)
    assert asked == ["probe/map.jinja"] * 2, "Salt's renderer asks once per SLS"


def test_the_pillar_and_the_states_each_import_their_own_file_of_the_same_name(tree):
    """The same name under pillar_roots and file_roots is two files; fetched-once is per root."""
    pillar = tree / "pillar"
    (pillar / "probe").mkdir(parents=True)
    (pillar / "probe" / "map.jinja").write_text(MAP.replace("VALUE", "from-pillar"))
    (pillar / "top.sls").write_text("base:\n  '*':\n    - probe\n")
    (pillar / "probe" / "init.sls").write_text('{%- from "probe/map.jinja" import value %}\nprobe: {{ value }}\n')
    (tree / "roots" / "probe" / "p.sls").write_text(
        SLS.replace("NAME", "p").replace("value: {{ value }}", "value: {{ value }}+{{ pillar.probe }}"))
    assert values(run(tree, "probe.p")) == {"probe-p": "one+from-pillar"}


def test_an_edited_template_renders_its_new_text_at_once(tree, compiles):
    run(tree)
    (tree / "roots" / "probe" / "map.jinja").write_text(MAP.replace("VALUE", "two"))
    compiles.clear()
    assert values(run(tree)) == {"probe-a": "two", "probe-b": "two"}
    assert compiles == ["probe/map.jinja"]
    (tree / "roots" / "probe" / "a.sls").write_text(SLS.replace("NAME", "a").replace("value: {{", "value: a-{{"))
    assert values(run(tree)) == {"probe-a": "a-two", "probe-b": "two"}
    # Going back to a text compiled before uses its code again, and renders that text.
    (tree / "roots" / "probe" / "map.jinja").write_text(MAP.replace("VALUE", "one"))
    compiles.clear()
    assert values(run(tree)) == {"probe-a": "a-one", "probe-b": "one"}
    assert compiles == []


def test_damaged_kept_code_is_compiled_again(tree, compiles):
    run(tree)
    for path in kept(tree):
        path.write_bytes(b"\x00not marshal")
    compiles.clear()
    assert values(run(tree)) == {"probe-a": "one", "probe-b": "one"}
    assert len(compiles) == 3
    for path in kept(tree):
        # Code this test's own run just wrote, read back to see it is whole again.
        assert hasattr(marshal.loads(path.read_bytes()), "co_code")  # noqa: S302


def test_a_broken_template_fails_with_salts_own_error(tree):
    (tree / "roots" / "probe" / "bad.sls").write_text(
        "probe-bad:\n  test.nop:\n    - value: {{ nowhere.defined }}\n")
    ours, salts = run(tree, "probe.bad"), run(tree, "probe.bad", ours=False)
    assert isinstance(ours, list) and ours == salts
    assert "'nowhere' is undefined" in "\n".join(ours)
