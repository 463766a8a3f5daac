"""No event decides who sent it: forged events from a minion of the site, in every form Salt's master
accepts, change nothing; the runners act only on what they find out themselves.

An accepted minion can put an event on the master's bus in three forms: the plain one (the master
adds the sender's ``id`` and ``cmd: _minion_event``), the batch form (``event.fire_master`` with a
``preload`` carrying ``events``: the minion's data goes on the bus as it is, any tag not on Salt's
blacklist), and the batch form with ``pretag`` (the tag is built from the minion's own parts, so
even blacklisted tags such as ``salt/cloud/...`` pass). Each forged event below carries every field
a forger would set, claiming to be the master's salt-cloud or the reverse proxy. The runners'
returns on the bus show that the reactor ran each time and that the runner refused, and why.

The tests run in order: before salt-cloud created the guest, its creation, after it; then the
proxy's renewal, forged renewals, forged expiry warnings (nothing reaches the site's Alertmanager, a
real one), and a certificate really near its end, which becomes an alert there whoever sent the event.
"""

from __future__ import annotations

import datetime
import time

import pytest

from tests.functional.conftest import LINEAGE, MINION_ID, wait_for, write_certificate

pytestmark = pytest.mark.functional

CREATED = f"salt/cloud/{MINION_ID}/created"


def runner_returns(event_listener, master, fun: str, after: float, count: int, timeout: float = 120) -> list:
    """The returns of the runner ``fun`` the reactor started after ``after``, once ``count`` of them came."""
    deadline = time.monotonic() + timeout
    while True:
        events = event_listener.get_events([(master.id, "salt/run/*/ret")], after_time=after)
        found = [e.data["return"] for e in events if e.data.get("fun") == f"runner.{fun}"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def on_the_bus(event_listener, master, tag: str, after: float) -> int:
    """How many events tagged ``tag`` reached the master's bus after ``after`` (Salt's blacklist drops
    some forms of some tags: the batch form without pretag of ``salt/cloud/*``)."""
    time.sleep(2)
    return len(event_listener.get_events([(master.id, tag)], after_time=after))


def forge(call, tag: str, data: dict) -> None:
    """``tag`` with ``data`` from the minion behind ``call``, in the plain, batch and pretag forms."""
    head, _, tail = tag.rpartition("/")
    sent = [
        call.run("event.send", tag, data=data),
        call.run("event.fire_master", data={}, tag="platform/noise", preload={"events": [{"tag": tag, "data": data}]}),
        call.run("event.fire_master", data={}, tag="platform/noise",
                 preload={"events": [{"tag": tail, "data": data}], "pretag": head}),
    ]
    assert all(result.returncode == 0 for result in sent), [result.stderr for result in sent]


def cloud_event_data() -> dict:
    """What salt-cloud's own created event carries (no id, no cmd: it looks like the master's)."""
    return {"name": MINION_ID, "profile": "debian12-vm", "provider": "platform:proxmox_platform",
            "driver": "proxmox_platform", "event": "created instance", "_stamp": "2026-12-01T00:00:00.000000"}


def renewal_data(lineage: str = LINEAGE, **extra) -> dict:
    """Everything the proxy's deploy-hook event carries on the bus, claimed by another minion."""
    return {"id": MINION_ID, "cmd": "_minion_event", "tag": "platform/acme/renewed", "lineage": lineage,
            "data": {"lineage": lineage, **extra}, "_stamp": "2026-12-01T00:00:00.000000", **extra}


def test_created_events_for_a_guest_salt_cloud_did_not_create_change_nothing(
        salt_master, salt_minion, salt_run, other_call, event_listener, marker_dir):
    marker = marker_dir / f"{MINION_ID}-highstate"
    marker.unlink(missing_ok=True)
    start = time.time()
    forge(other_call, CREATED, cloud_event_data())
    assert salt_run.run("event.send", CREATED, data=cloud_event_data()).returncode == 0  # even the master's own
    arrived = on_the_bus(event_listener, salt_master, CREATED, start)
    assert arrived >= 3, "the plain and pretag forms and the master's own reach the bus"
    returns = runner_returns(event_listener, salt_master, "platform.provisioned", start, arrived)
    assert len(returns) == arrived, f"the reactor must hand every event to the runner: {returns}"
    for ret in returns:
        assert ret["result"] is False
        assert ret["comment"] == f"salt-cloud's provider has no instance named {MINION_ID}; nothing applied"
    assert not marker.exists(), "no highstate for a guest salt-cloud's provider does not have"


def test_created_event_from_salt_cloud_highstates_the_new_guest(
        salt_master, salt_minion, salt_run, salt_cloud, event_listener, marker_dir, pve):
    marker = marker_dir / f"{MINION_ID}-highstate"
    marker.unlink(missing_ok=True)
    created = salt_cloud("-p", "debian12-vm", MINION_ID)
    assert created.returncode == 0, created.stderr
    assert any(vm.name == MINION_ID for vm in pve.vms), "salt-cloud created the guest at its provider"
    start = time.time()
    # salt-cloud fires this on its master's bus; the checkout's salt-cloud runs beside this test master.
    sent = salt_run.run("event.send", CREATED, data=cloud_event_data())
    assert sent.returncode == 0
    assert wait_for(marker, 90), "the reactor did not highstate the created guest"
    [ret] = runner_returns(event_listener, salt_master, "platform.provisioned", start, 1)
    assert ret["result"] is True and ret["comment"] == f"highstate of {MINION_ID} started"


def test_created_events_after_the_creation_change_nothing(
        salt_master, salt_minion, salt_call, salt_run, other_call, event_listener, marker_dir):
    marker = marker_dir / f"{MINION_ID}-highstate"
    marker.unlink(missing_ok=True)
    start = time.time()
    forge(other_call, CREATED, cloud_event_data())
    forge(salt_call, CREATED, cloud_event_data())  # from the guest itself
    assert salt_run.run("event.send", CREATED, data=cloud_event_data()).returncode == 0
    arrived = on_the_bus(event_listener, salt_master, CREATED, start)
    assert arrived >= 5
    returns = runner_returns(event_listener, salt_master, "platform.provisioned", start, arrived)
    assert len(returns) == arrived
    for ret in returns:
        assert ret == {"result": False, "comment": f"{MINION_ID} (this key) was already brought to its highstate "
                                                   f"once; nothing applied"}
    assert not wait_for(marker, 5), "a creation is brought to its highstate once"


def test_the_proxys_renewal_is_acted_on_once(salt_master, salt_call, event_listener, acme_paths):
    write_certificate(acme_paths["live"])
    acme_paths["reloads"].unlink(missing_ok=True)
    start = time.time()
    assert salt_call.run("event.send", "platform/acme/renewed", data={"lineage": LINEAGE}).returncode == 0
    [ret] = runner_returns(event_listener, salt_master, "acme.renewed", start, 1)
    assert ret["result"] is True and ret["nginx"] == "reloaded" and ret["minion"] == MINION_ID, ret
    assert acme_paths["reloads"].read_text() == "reloaded\n"
    start = time.time()
    assert salt_call.run("event.send", "platform/acme/renewed", data={"lineage": LINEAGE}).returncode == 0
    [again] = runner_returns(event_listener, salt_master, "acme.renewed", start, 1)
    assert again["result"] is False and "newer than the one last acted on" in again["comment"]
    assert acme_paths["reloads"].read_text() == "reloaded\n", "the same certificate is acted on once"


def test_forged_renewal_events_change_nothing(salt_master, other_call, event_listener, acme_paths):
    start = time.time()
    forge(other_call, "platform/acme/renewed", renewal_data())
    returns = runner_returns(event_listener, salt_master, "acme.renewed", start, 3)
    assert len(returns) == 3, returns
    for ret in returns:
        assert ret["result"] is False
        assert ret["comment"].startswith(f"no certificate of {LINEAGE} newer than the one last acted on, on "
                                         f"{MINION_ID} (serial ")
    assert acme_paths["reloads"].read_text() == "reloaded\n", "nginx was not reloaded for a forged event"
    # A lineage the site does not have, claimed by the forger, reaches no proxy either.
    start = time.time()
    forge(other_call, "platform/acme/renewed", renewal_data("evil.example.org"))
    for ret in runner_returns(event_listener, salt_master, "acme.renewed", start, 3):
        assert ret["result"] is False and "no reverse proxy of the site has the lineage evil.example.org" in \
            ret["comment"]
    assert acme_paths["reloads"].read_text() == "reloaded\n"


def test_a_forged_renewal_reaches_at_most_what_the_real_one_would(salt_master, other_call, event_listener,
                                                                   acme_paths):
    serial = write_certificate(acme_paths["live"])  # the proxy really has a new certificate
    start = time.time()
    other_call.run("event.fire_master", data={}, tag="platform/noise",
                   preload={"events": [{"tag": "platform/acme/renewed", "data": renewal_data()}]})
    [ret] = runner_returns(event_listener, salt_master, "acme.renewed", start, 1)
    assert ret["result"] is True and ret["serial"] == format(serial, "x"), "what the proxy's own event would do"
    start = time.time()
    forge(other_call, "platform/acme/renewed", renewal_data())
    assert all(r["result"] is False for r in runner_returns(event_listener, salt_master, "acme.renewed", start, 3))
    assert acme_paths["reloads"].read_text() == "reloaded\nreloaded\n"


def test_forged_expiry_warnings_change_nothing(salt_master, other_call, event_listener, alertmanager):
    start = time.time()
    forge(other_call, "platform/acme/expiring", renewal_data(days_left=1))
    returns = runner_returns(event_listener, salt_master, "acme.expiring", start, 3)
    assert len(returns) == 3, returns
    for ret in returns:
        assert ret == {"result": False, "comment": f"no certificate of {LINEAGE} on a proxy is within its warning "
                                                   f"days of its end; nothing done"}
    assert alertmanager.alerts() == [], "the certificate is 90 days from its end: no alert is posted"


def test_a_certificate_near_its_end_becomes_an_alert_in_alertmanager(salt_master, salt_call, other_call,
                                                                       event_listener, acme_paths, alertmanager):
    write_certificate(acme_paths["live"], days=5)  # renewals have been failing on the proxy
    start = time.time()
    # The proxy's daily check; its days_left is not what the runner reports.
    assert salt_call.run("event.send", "platform/acme/expiring",
                         data={"lineage": LINEAGE, "days_left": 40}).returncode == 0
    [ret] = runner_returns(event_listener, salt_master, "acme.expiring", start, 1)
    assert ret["result"] is True and ret["days_left"] in (4, 5), ret
    assert ret["alertmanagers"] == {alertmanager.url: "posted"}, ret
    [alert] = alertmanager.alerts(alertname="CertificateRenewalFailing")
    assert alert["labels"] == {"alertname": "CertificateRenewalFailing", "severity": "critical", "guest": MINION_ID,
                               "role": "reverse_proxy", "lineage": LINEAGE, "fqdn": LINEAGE, "site": "small"}
    assert alert["status"]["state"] == "active"
    assert [r["name"] for r in alert["receivers"]] == ["mail-critical"], "routed to mail like Prometheus's alerts"
    ends = datetime.datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
    left = ends - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=1) < left < datetime.timedelta(days=2), "outlives the next daily check only"
    # The same finding from a forger's event is the same alert: verified, kept alive, not duplicated.
    start = time.time()
    forge(other_call, "platform/acme/expiring", renewal_data(days_left=80))
    assert all(r["result"] is True for r in runner_returns(event_listener, salt_master, "acme.expiring", start, 3))
    assert len(alertmanager.alerts(alertname="CertificateRenewalFailing")) == 1


def test_an_alertmanager_that_does_not_answer_is_reported_in_the_runners_return(salt_run, alertmanager):
    alertmanager.stop()
    try:
        ret = salt_run.run("acme.expiring", f"lineage={LINEAGE}").data
    finally:
        alertmanager.start()
    assert ret["result"] is False and ret["days_left"] in (4, 5), ret
    assert ret["alertmanagers"] == {alertmanager.url: "unreachable: ConnectionError"}
    assert ret["comment"].endswith(f"; the alert did not reach {alertmanager.url} (unreachable: ConnectionError)")
