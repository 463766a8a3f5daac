"""Everything the tree renders, rendered for every guest of every site, found by discovery.

Nothing here names a role, an SLS, a template or a guest: a new role folder, template, reactor or
fixture site is covered the day it lands. For every guest of every case (tests/render/discovery.py):
its highstate and every SLS of the tree render; every ``files/*.j2`` renders with the context each
state that manages it passes, given to Salt's template engine as ``file.managed`` (``file.get_managed``)
gives it, and passes the checks this machine has for it; a template no state of any guest uses fails.
Templates that read a secret read it from a real OpenBao, after the guest's own ``secret_generated``
states wrote it. Every reactor renders for the events it is meant for and for forged ones, through Salt's own reactor.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
import salt.config
import salt.utils.reactor
from salt.exceptions import SaltException

from sitectl.config import SaltSettings, write_config
from tests.openbao import BaoServer
from tests.render.discovery import (
    GuestRender,
    cases,
    check_rendered,
    checkout_for,
    managing_states,
    reactor_files,
    render_managed,
    sls_names,
    template_urls,
)

pytestmark = pytest.mark.render

CASES = cases()
GUESTS = [pytest.param(case, guest, id=f"{case.name}/{guest}") for case in CASES for guest in case.guests]

# A secret the states read but never generate is the operator's to write (docs: the TSIG key of
# dns-01). The read fails naming the secret; the test then writes a throwaway value there, as the
# operator would, and renders again.
MISSING_SECRET = re.compile(r"(?P<mount>[\w-]+)/data/(?P<path>[\w/.-]+): "
                            r"(no such secret|the secret has no field '(?P<field>[^']+)')")


@pytest.fixture(scope="session")
def template_vault(tmp_path_factory):
    """A real OpenBao dev server for the templates that read their secret at render time."""
    server = BaoServer(tmp_path_factory.mktemp("render-bao"), dev=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def renders(tmp_path_factory, template_vault):
    """(case, guest) -> GuestRender, each compiled once for the whole session."""
    token_file = tmp_path_factory.mktemp("render-bao-token") / "token"
    token_file.write_text(template_vault.root_token)
    overrides = {"vault_server": {"url": template_vault.url, "token_file": str(token_file)}}
    configs, guests = {}, {}

    def get(case, guest, salts_jinja=False) -> GuestRender:
        """``salts_jinja``: rendered by Salt's own ``jinja`` renderer instead of the tree's
        (_renderers/jinja.py, which the render tier's minion loads as the guests do)."""
        if case.name not in configs:
            configs[case.name] = checkout_for(case, tmp_path_factory.mktemp(f"render-{case.name}"))
        if (case.name, guest, salts_jinja) not in guests:
            guests[case.name, guest, salts_jinja] = GuestRender(
                configs[case.name], guest, {**overrides, "render_dirs": []} if salts_jinja else overrides)
        return guests[case.name, guest, salts_jinja]

    return get


@pytest.mark.parametrize(("case", "guest"), GUESTS)
def test_the_guest_renders_its_highstate_and_every_sls_of_the_tree(renders, case, guest):
    rendered = renders(case, guest)
    assert isinstance(rendered.highstate, dict), f"{case.name}/{guest}: the highstate does not compile:\n" + \
        "\n".join(rendered.highstate)
    if not isinstance(rendered.every_sls, dict):
        failing = rendered.failing_sls()
        pytest.fail(f"{case.name}/{guest}: {len(failing)} SLS fail to render:\n"
                    + "\n".join(f"{sls}: {errors}" for sls, errors in failing.items()))
    outside = sorted(set(rendered.highstate) - set(rendered.every_sls))
    assert not outside, f"{case.name}/{guest}: states of its highstate that the tree's SLS do not render: {outside}"


@pytest.mark.parametrize(("case", "guest"), [p for p in GUESTS if p.values[0].name == "example"])
def test_the_trees_jinja_renderer_renders_every_sls_as_salts_own_does(renders, case, guest):
    """_renderers/jinja.py keeps compiled templates between SLS and runs (issue 21): the guest's
    every SLS must come out exactly as through Salt's renderer, and the kept code must be there."""
    ours = renders(case, guest)
    if not isinstance(ours.every_sls, dict):
        pytest.skip("the tree does not render for this guest (its own test names why)")
    code_dir = Path(ours.caller.opts["cachedir"]) / "platform-jinja"
    kept = sorted(p.name for p in code_dir.iterdir())
    assert kept, f"{guest}: the tree's renderer kept no compiled template in {code_dir}"
    salts = renders(case, guest, salts_jinja=True)
    assert salts.every_sls == ours.every_sls
    assert sorted(p.name for p in code_dir.iterdir()) == kept, "Salt's renderer wrote compiled code"


def test_every_sls_of_the_tree_is_applied_by_some_guest(renders):
    """An SLS that no guest of any site applies is never converged anywhere: dead or mis-wired."""
    applied = set()
    for case in CASES:
        for guest in case.guests:
            high = renders(case, guest).highstate
            if isinstance(high, dict):
                applied |= {state["__sls__"] for state in high.values()}
    unapplied = [sls for sls in sls_names() if sls not in applied and not any(
        other.startswith(f"{sls}.") for other in applied)]
    assert not unapplied, f"no guest of any site applies: {unapplied}"


def render_as_operator(rendered: GuestRender, managed, vault) -> str:
    """Render ``managed``; when it reads a secret that no state generates, write a throwaway value
    there as the operator would, and render again (an absent secret first, then its field)."""
    kv = vault.client().secrets.kv.v2
    for _ in range(8):
        try:
            return render_managed(rendered, managed)
        except AssertionError as exc:
            missing = MISSING_SECRET.search(str(exc))
            if not missing:
                raise
            where = {"path": missing["path"], "mount_point": missing["mount"]}
            current = {}
            if missing["field"]:
                current = kv.read_secret_version(**where, raise_on_deleted_version=True)["data"]["data"]
                current[missing["field"]] = secrets.token_urlsafe(24)
            kv.create_or_update_secret(**where, secret=current)
    raise AssertionError(f"{managed.state_id}: still reads absent secrets after eight were written")


@pytest.mark.parametrize("url", template_urls(), ids=lambda url: url.removeprefix("salt://"))
def test_the_template_renders_with_the_context_of_every_state_that_manages_it(renders, template_vault, url,
                                                                              tmp_path):
    rendered_count, failures = 0, []
    for case in CASES:
        for guest in case.guests:
            rendered = renders(case, guest)
            if not isinstance(rendered.highstate, dict):
                continue  # reported by the guest's own test
            managed_here = managing_states(rendered.highstate, url)
            if managed_here:
                rendered.generate_declared_secrets()
            for managed in managed_here:
                where = f"{case.name}/{guest}"
                if managed.args.get("template") != "jinja":
                    failures.append(f"{where}: {managed.state_id} serves the Jinja template {url} with "
                                    f"template: {managed.args.get('template')!r}")
                    continue
                try:
                    text = render_as_operator(rendered, managed, template_vault)
                except AssertionError as exc:
                    failures.append(f"{where}: {exc}")
                    continue
                workdir = tmp_path / case.name / guest / managed.state_id
                workdir.mkdir(parents=True, exist_ok=True)
                failures += [f"{where}: {failure}" for failure in check_rendered(rendered, managed, text, workdir)]
                rendered_count += 1
    assert rendered_count or failures, f"unused template: no state of any guest of any site manages {url}"
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------- reactors

def minion_event(minion: str, tag: str, **data) -> dict:
    """An event as the master re-fires it from a minion (event.send): the id the master authenticated,
    ``cmd: _minion_event`` and the minion's own data under ``data``."""
    return {"id": minion, "cmd": "_minion_event", "tag": tag, "data": data, "pretag": None,
            "_stamp": "2026-12-01T00:00:00.000000"}


INJECTED = 'mail.your-domain.com"\n      - minion: vault'

# For each reactor: (what the event is, tag, data, the runner calls the reactor must make).
# Reactors pass a hint (a guest name from the tag, a lineage) and nothing else from an event, whoever
# sent it: the runners decide from what they find out themselves (tests/functional/test_forged_events.py).
RENEWED = [("acme.renewed", [{"lineage": "mail.your-domain.com"}])]
EXPIRING = [("acme.expiring", [{"lineage": "mail.your-domain.com"}])]
REACTOR_EVENTS = {
    "cloud-created.sls": [
        ("salt-cloud created the guest", "salt/cloud/vault/created",
         {"name": "vault", "profile": "debian12-lxc", "event": "created instance",
          "_stamp": "2026-12-01T00:00:00.000000"},
         [("platform.provisioned", [{"name": "vault"}])]),
        ("a minion forwards a created event: the same hint, the runner decides", "salt/cloud/vault/created",
         minion_event("rabbitmq", "salt/cloud/vault/created", name="vault"),
         [("platform.provisioned", [{"name": "vault"}])]),
        ("a name that is not a DNS label", "salt/cloud/Vault;reboot/created", {"name": "x"}, []),
        ("a tag with an extra part", "salt/cloud/vault/x/created", {"name": "vault"}, []),
    ],
    "acme-renewed.sls": [
        ("certbot renewed a lineage", "platform/acme/renewed",
         minion_event("reverse-proxy", "platform/acme/renewed", lineage="mail.your-domain.com"), RENEWED),
        ("fired on the master's bus, not by a minion: the same hint", "platform/acme/renewed",
         {"id": "reverse-proxy", "data": {"lineage": "mail.your-domain.com"}}, RENEWED),
        ("a sender id that is not a DNS label: not passed on", "platform/acme/renewed",
         minion_event("reverse-proxy\n  evil", "platform/acme/renewed", lineage="mail.your-domain.com"), RENEWED),
        ("a lineage that is not a string", "platform/acme/renewed",
         minion_event("reverse-proxy", "platform/acme/renewed", lineage=["a", "b"]), []),
        ("a lineage written to break out of its YAML value is not a lineage", "platform/acme/renewed",
         minion_event("reverse-proxy", "platform/acme/renewed", lineage=INJECTED), []),
    ],
    "acme-expiring.sls": [
        ("the daily check found a certificate close to its end: the days are not passed on",
         "platform/acme/expiring",
         minion_event("reverse-proxy", "platform/acme/expiring", lineage="mail.your-domain.com", days_left=9),
         EXPIRING),
        ("fired on the master's bus, not by a minion: the same hint", "platform/acme/expiring",
         {"id": "reverse-proxy", "data": {"lineage": "mail.your-domain.com", "days_left": 9}}, EXPIRING),
        ("no lineage", "platform/acme/expiring", minion_event("reverse-proxy", "platform/acme/expiring",
                                                              days_left=9), []),
        ("days left written to break out of their YAML value are not passed on", "platform/acme/expiring",
         minion_event("reverse-proxy", "platform/acme/expiring", lineage="mail.your-domain.com",
                      days_left="9}\n      - minion: vault"),
         EXPIRING),
    ],
}


@pytest.fixture(scope="module")
def reactor(tmp_path_factory):
    """Salt's own reactor over the master configuration the checkout renders (its reactor map)."""
    config = write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("reactor-state")))
    reactor = salt.utils.reactor.Reactor(salt.config.master_config(str(config / "master")))
    yield reactor
    reactor.minion.destroy()


def test_every_reactor_is_named_by_the_masters_reactor_map(reactor):
    mapped = {path for entry in reactor.list_all() for paths in entry.values()
              for path in (paths if isinstance(paths, list) else [paths])}
    unmapped = [path.name for path in reactor_files() if str(path) not in mapped]
    assert not unmapped, f"reactor files no event reaches: {unmapped}"


@pytest.mark.parametrize("path", reactor_files(), ids=lambda path: path.name)
def test_the_reactor_renders_for_its_events_and_passes_only_a_checked_hint(reactor, path):
    events = REACTOR_EVENTS.get(path.name)
    assert events, f"{path.name}: add its representative events (genuine and forged) to REACTOR_EVENTS"
    for what, tag, data, expected in events:
        files = reactor.list_reactors(tag)
        assert str(path) in files, f"{path.name}: {what}: the master's reactor map sends {tag!r} to {files}"
        try:
            reactor.render_template(str(path), tag=tag, data=data)
        except SaltException as exc:  # Salt's reactor logs this and does nothing; here it is a failure
            pytest.fail(f"{path.name}: {what}: does not render: {exc}")
        chunks = reactor.reactions(tag, data, [str(path)])
        made = [(chunk["fun"], json.loads(json.dumps(chunk.get("args", [])))) for chunk in chunks]
        assert [chunk["state"] for chunk in chunks] == ["runner"] * len(chunks), f"{path.name}: {what}"
        assert made == expected, f"{path.name}: {what}: {made}"
