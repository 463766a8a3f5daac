"""Benchmark of the edge in the lab: certificate renewal to the new certificate being served, and the
proxy's throughput next to its upstream served directly.

1. Renewal latency, RUNS times: `certbot renew --force-renewal` of the mail lineage on the proxy
   guest (as certbot.service runs it); measured from the start of the renewal to (a) certbot's
   end (its deploy hook, which sends `platform/acme/renewed`, runs inside it), (b) the return of the reactor's
   `acme.renewed` runner, (c) the proxy serving the new serial, (d) the mail guest holding it.
   Printed: median and worst of each.
2. Throughput: ApacheBench (`ab`, Debian's apache2-utils) from a second guest (microservices),
   keep-alive, against the upstream directly (nginx serving a static page on the nextcloud
   guest, plain HTTP) and through the proxy (HTTPS, the nextcloud route). Printed: requests per
   second of each and their ratio, measured in this one run (the machine is noisy: compare ratios).
   The nextcloud guest's firewall admits only the proxy on port 80; the benchmark inserts one rule
   for the load guest and removes it by its handle at the end.

Uses the running lab (`make lab`) or brings one up; leaves it running.

    sudo .venv/bin/python benchmarks/edge.py [--runs 5] [--requests 5000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sitectl import labctl  # noqa: E402

DOMAIN = "your-domain.com"
PROXY, UPSTREAM, LOAD = "reverse-proxy", "nextcloud", "microservices"
MAIL_CERT = "/opt/mailcow-dockerized/data/assets/ssl/cert.pem"
PAGE = "x" * 4096  # a 4 KiB static page


def sh(lab: labctl.Lab, guest: str, script: str, check: bool = True, timeout: float = 600):
    out = subprocess.run(["lxc-attach", "-P", lab.lab_dir, "-n", guest, "--clear-env", "--", "env",
                          "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c", script],
                         capture_output=True, text=True, check=False, timeout=timeout)
    if check and out.returncode:
        raise SystemExit(f"{guest}: {script}: {out.stderr[-800:]}")
    return out


def ip(lab: labctl.Lab, guest: str) -> str:
    return lab.pillar["site"]["guests"][guest]["address"].split("/")[0]


def served_serial(lab: labctl.Lab, name: str) -> int:
    import socket

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(lab.settings.state_dir / "lab-acme" / "pebble-root.pem"))
    with socket.create_connection((ip(lab, PROXY), 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def renewal_once(lab: labctl.Lab, bus) -> dict[str, float]:
    name = f"mail.{DOMAIN}"
    before = served_serial(lab, name)
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    sh(lab, PROXY, "REQUESTS_CA_BUNDLE=/etc/letsencrypt/platform-acme-ca.pem certbot renew --force-renewal "
                   f"--no-random-sleep-on-renew --cert-name {name} -q")
    marks["certbot_done"] = time.monotonic() - t0
    deadline = t0 + 180
    while time.monotonic() < deadline and "runner_returned" not in marks:
        event = bus.get_event(wait=0.2, full=True)
        if not event:
            continue
        if event["tag"] == "platform/acme/renewed":
            marks.setdefault("event_on_master", time.monotonic() - t0)
        elif event["tag"].startswith("salt/run/") and event["tag"].endswith("/ret") \
                and event["data"].get("fun") == "runner.acme.renewed":
            if not event["data"]["return"].get("result"):
                raise SystemExit(f"the runner failed: {event['data']['return']}")
            marks["runner_returned"] = time.monotonic() - t0
    while time.monotonic() < deadline and served_serial(lab, name) == before:
        time.sleep(0.1)
    marks["new_serial_served"] = time.monotonic() - t0
    after = served_serial(lab, name)
    while time.monotonic() < deadline:
        out = sh(lab, "mailcow", f"openssl x509 -noout -serial -in {MAIL_CERT}", check=False).stdout
        if out.startswith("serial=") and int(out.split("=")[1], 16) == after:
            break
        time.sleep(0.2)
    marks["mail_guest_has_it"] = time.monotonic() - t0
    if after == before or len(marks) != 5:
        raise SystemExit(f"renewal incomplete: {marks}")
    return marks


def ab(lab: labctl.Lab, url: str, requests: int, concurrency: int) -> float:
    out = sh(lab, LOAD, f"ab -q -k -n {requests} -c {concurrency} {url}", timeout=900).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    if failed:
        raise SystemExit(f"ab {url}: {failed} failed requests")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))


def throughput(lab: labctl.Lab, requests: int, concurrency: int) -> dict[str, float]:
    sh(lab, UPSTREAM, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light "
                      ">/dev/null && systemctl stop lab-upstream 2>/dev/null; "
                      f"printf '{PAGE}' > /var/www/html/index.html && systemctl restart nginx")
    sh(lab, LOAD, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils "
                  f">/dev/null && (grep -q ' nextcloud.{DOMAIN}$' /etc/hosts || "
                  f"echo '{ip(lab, PROXY)} nextcloud.{DOMAIN}' >> /etc/hosts)")
    rule = sh(lab, UPSTREAM, f"nft -e -a insert rule inet platform inbound ip saddr {ip(lab, LOAD)} tcp dport 80 "
                             "accept").stdout
    handle = re.search(r"# handle (\d+)", rule).group(1)
    try:
        direct = ab(lab, f"http://{ip(lab, UPSTREAM)}/", requests, concurrency)
        proxied = ab(lab, f"https://nextcloud.{DOMAIN}/", requests, concurrency)
    finally:
        sh(lab, UPSTREAM, f"nft delete rule inet platform inbound handle {handle}", check=False)
    return {"upstream_direct_http_rps": direct, "through_proxy_https_rps": proxied,
            "ratio_proxy_to_direct": round(proxied / direct, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    import salt.utils.event

    lab = labctl.Lab()
    if not lab.master_pid():
        if labctl.up() != 0:
            raise SystemExit("the lab did not come up cleanly")
    lab.configure()
    opts = lab.master_opts()
    runs = []
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        for _ in range(args.runs):
            runs.append(renewal_once(lab, bus))
    figures = {"renewal_runs": args.runs}
    for mark in runs[0]:
        values = [r[mark] for r in runs]
        figures[f"renewal_{mark}_s"] = {"median": round(statistics.median(values), 2), "worst": round(max(values), 2)}
    figures.update(throughput(lab, args.requests, args.concurrency))
    figures["load"] = {"requests": args.requests, "concurrency": args.concurrency, "page_bytes": len(PAGE)}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
