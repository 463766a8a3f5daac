"""The platform ext_pillar keeps the validated site per master process (sitectl.pillarcache), keyed by
the bytes it was computed from: an edit of the site file is seen by the very next compile, a broken
edit is refused, a revert is accepted again, and every guest's cached pillar is the one computed afresh."""

from __future__ import annotations

import pytest

from sitectl import ROOT, pillarcache, render, site, sitefile
from tests.conftest import SITES, make_checkout

pytestmark = pytest.mark.render

SMALL = SITES / "valid" / "small" / "site.sls"


@pytest.fixture
def checkout(tmp_path):
    root, conf = make_checkout(tmp_path, SMALL, site_name="fixture")
    return root / "pillar" / "site" / "fixture.sls", conf


def validations(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = site.validate

    def counted(pillar):
        calls.append(1)
        return real(pillar)

    monkeypatch.setattr(site, "validate", counted)
    return calls


def test_every_edit_of_the_site_file_is_seen_by_the_next_compile(checkout, monkeypatch):
    path, conf = checkout
    original = path.read_text()
    guest = sorted(sitefile.loads(original, "site")["site"]["guests"])[0]
    calls = validations(monkeypatch)

    first = render.pillar(conf, guest)
    assert "_errors" not in first and first["site"]["domain"] != "changed.example.net"
    seen = len(calls)
    assert render.pillar(conf, guest) == first
    assert len(calls) == seen, "the same bytes are validated once per process"

    domain = first["site"]["domain"]
    path.write_text(original.replace(f"domain: {domain}", "domain: changed.example.net", 1))
    assert render.pillar(conf, guest)["site"]["domain"] == "changed.example.net"
    assert len(calls) > seen

    path.write_text(original.replace(f"domain: {domain}", "domain: 12", 1))
    broken = render.pillar(conf, guest)
    assert "site.domain" in broken["_errors"][0], broken["_errors"]

    edited = len(calls)
    path.write_text(original)
    assert render.pillar(conf, guest) == first
    assert len(calls) == edited, "the revert is the first content again, already validated"


def test_a_cached_pillar_is_a_copy_and_equals_the_one_computed_afresh():
    texts = ((ROOT / "pillar/platform/roles.sls").read_text(), (ROOT / "pillar/site/example.sls").read_text())
    pillarcache.clear()
    merged = pillarcache.validated(texts, "pillar/site/example.sls", {})
    assert "_errors" not in merged
    for name in sorted(merged["site"]["guests"]):
        cached = pillarcache.with_view(texts, {}, merged, name)
        cached["site"]["domain"] = "mutated by a caller"
        cached["platform"]["guest"]["roles"].append("mutated")
        again = pillarcache.with_view(texts, {}, merged, name)
        fresh = pillarcache._validate(texts, "pillar/site/example.sls", {})
        assert again == {**fresh, **site.platform_pillar(fresh, name)}, name
