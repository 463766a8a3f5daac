"""A double of mailcow's HTTP API for the tests, written from mailcow-dockerized's published OpenAPI
description (``data/web/api/openapi.yaml``) and the checks its PHP makes: the paths, methods, request
bodies and answers the modules use, with the real API's refusals.

- ``X-API-Key``: an unknown key is HTTP 401 ``{"type": "error", "msg": "authentication failed"}``;
  a known key from a source outside ``allow_from`` is 401 ``api access denied for ip <addr>``.
- Writes answer 200 with a list of ``{type, log, msg}``; a refusal is ``type: danger`` with mailcow's
  message keys: ``domain_exists``, ``domain_not_found``, ``object_exists`` (a duplicate mailbox),
  ``is_alias_or_mailbox`` (an alias on an existing address), ``domain_not_empty``,
  ``password_mismatch``, ``dkim_domain_or_sel_invalid`` (a domain that already has a key).
- Reads answer the objects in the shape of the description's examples (quotas in bytes, flags as
  "0"/"1" strings); ``get/dkim/<domain>`` is ``[]`` for a domain without a key, as PHP encodes an
  empty array.
- DKIM keys are real RSA keys (``cryptography``), so a public key published in DNS can be checked
  against the private key the double keeps.

It is a double, not mailcow: nothing here sends or receives mail.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MIB = 1024 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[a-z0-9.-]+\.[a-z]{2,}$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _ok(log, msg):
    return {"type": "success", "log": log, "msg": msg}


def _danger(log, msg):
    return {"type": "danger", "log": log, "msg": msg}


class MailcowDouble:
    """The API on 127.0.0.1 (or ``host``), one read-write key, an ``allow_from`` list of addresses."""

    def __init__(self, api_key: str, host: str = "127.0.0.1", allow_from: tuple[str, ...] = ("127.0.0.1",),
                 split_dkim: bool = False, port: int = 0):
        self.api_key = api_key
        self.allow_from = set(allow_from)
        self.split_dkim = split_dkim
        self.domains: dict[str, dict] = {}
        self.mailboxes: dict[str, dict] = {}
        self.aliases: dict[int, dict] = {}
        self.dkim: dict[str, dict] = {}
        self.requests: list[dict] = []
        self._next_alias = 1
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with double._lock:
                    status, answer = double.handle(method, self.path, self.headers.get("X-API-Key"),
                                                   self.client_address[0], body)
                self._send(status, answer)

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> MailcowDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def state(self) -> dict:
        """What the double holds, for a test that runs it in a guest (``GET /_double/state`` with the key):
        mailboxes with the SHA-256 of their password, never the password."""
        import hashlib

        return {"domains": sorted(self.domains), "aliases": {a["address"]: a["goto"] for a in self.aliases.values()},
                "mailboxes": {u: hashlib.sha256(m["password"].encode()).hexdigest() for u, m in self.mailboxes.items()},
                "dkim": {d: k["pubkey"] for d, k in self.dkim.items()}}

    # -- the API ---------------------------------------------------------------------------------
    def handle(self, method: str, path: str, key: str | None, remote: str, body) -> tuple[int, object]:
        self.requests.append({"method": method, "path": path, "body": body})
        if path == "/_double/state" and key == self.api_key:
            return 200, self.state()
        if key is not None:
            key = re.sub(r"[^a-zA-Z0-9-]", "", key)
        if key != self.api_key:
            return 401, {"type": "error", "msg": "authentication failed"}
        if remote not in self.allow_from:
            return 401, {"type": "error", "msg": f"api access denied for ip {remote}"}
        route = path.split("?", 1)[0].removeprefix("/api/v1/")
        action, _, rest = route.partition("/")
        kind, _, arg = rest.partition("/")
        handler = getattr(self, f"_{method.lower()}_{action}_{kind}", None)
        if handler is None:
            return 404, {"type": "error", "msg": "route not found"}
        return 200, handler(arg, body) if method == "GET" else handler(body)

    def _get_get_domain(self, arg, _body):
        chosen = self.domains.values() if arg == "all" else [self.domains[arg]] if arg in self.domains else []
        return [self._domain_view(d) for d in chosen]

    def _domain_view(self, d):
        used = [m for m in self.mailboxes.values() if m["domain"] == d["domain"]]
        return {"active": d["active"], "aliases_in_domain": 0, "aliases_left": int(d["aliases"]),
                "backupmx": "0", "bytes_total": "0", "def_new_mailbox_quota": int(d["defquota"]) * MIB,
                "def_quota_for_mbox": int(d["defquota"]) * MIB, "description": d["description"],
                "domain_name": d["domain"], "gal": "0", "max_new_mailbox_quota": int(d["maxquota"]) * MIB,
                "max_num_aliases_for_domain": int(d["aliases"]), "max_num_mboxes_for_domain": int(d["mailboxes"]),
                "max_quota_for_domain": int(d["quota"]) * MIB, "max_quota_for_mbox": int(d["maxquota"]) * MIB,
                "mboxes_in_domain": len(used), "mboxes_left": int(d["mailboxes"]) - len(used), "msgs_total": "0",
                "quota_used_in_domain": "0", "relay_all_recipients": "0", "relayhost": "0", "rl": False, "tags": []}

    def _post_add_domain(self, body):
        log = ["mailbox", "add", "domain", body, None]
        domain = str((body or {}).get("domain", "")).lower()
        if not _DOMAIN.match(domain):
            return [_danger(log, ["domain_invalid", domain])]
        if domain in self.domains:
            return [_danger(log, ["domain_exists", domain])]
        if int(body.get("maxquota", 10240)) > int(body.get("quota", 10240)):
            return [_danger(log, "mailbox_quota_exceeds_domain_quota")]
        self.domains[domain] = {"domain": domain, "description": body.get("description", ""),
                                "active": "1" if str(body.get("active", "1")) in ("1", "true") else "0",
                                "mailboxes": body.get("mailboxes", 10), "aliases": body.get("aliases", 400),
                                "quota": body.get("quota", 10240), "maxquota": body.get("maxquota", 10240),
                                "defquota": body.get("defquota", 3072)}
        return [_ok(log, ["domain_added", domain])]

    def _post_edit_domain(self, body):
        out = []
        for domain in body["items"]:
            log = ["mailbox", "edit", "domain", body, None]
            if domain not in self.domains:
                out.append(_danger(log, ["domain_not_found", domain]))
                continue
            self.domains[domain].update({k: v for k, v in body["attr"].items() if k in self.domains[domain]})
            out.append(_ok(log, ["domain_modified", domain]))
        return out

    def _post_delete_domain(self, body):
        out = []
        for domain in body:
            log = ["mailbox", "delete", "domain", {"domain": domain}, None]
            if domain not in self.domains:
                out.append(_danger(log, ["domain_not_found", domain]))
            elif any(m["domain"] == domain for m in self.mailboxes.values()):
                out.append(_danger(log, ["domain_not_empty", domain]))
            else:
                del self.domains[domain]
                self.dkim.pop(domain, None)
                out.append(_ok(log, ["domain_removed", domain]))
        return out

    def _get_get_mailbox(self, arg, _body):
        chosen = self.mailboxes.values() if arg == "all" else [self.mailboxes[arg]] if arg in self.mailboxes else []
        return [{"active": m["active"], "attributes": {"force_pw_update": "0"}, "domain": m["domain"],
                 "local_part": m["local_part"], "name": m["name"], "quota": int(m["quota"]) * MIB, "quota_used": 0,
                 "username": m["username"], "tags": []} for m in chosen]

    def _post_add_mailbox(self, body):
        safe = {k: ("*" if k.startswith("password") else v) for k, v in (body or {}).items()}
        log = ["mailbox", "add", "mailbox", safe, None]
        local_part, domain = str(body.get("local_part", "")), str(body.get("domain", "")).lower()
        username = f"{local_part}@{domain}"
        if not local_part or not _EMAIL.match(username):
            return [_danger(log, "mailbox_invalid")]
        if username in self.mailboxes:
            return [_danger(log, ["object_exists", username])]
        if any(a["address"] == username for a in self.aliases.values()):
            return [_danger(log, ["is_alias", username])]
        if domain not in self.domains:
            return [_danger(log, ["domain_not_found", domain])]
        if not body.get("password") or body.get("password") != body.get("password2"):
            return [_danger(log, "password_mismatch")]
        self.mailboxes[username] = {"username": username, "local_part": local_part, "domain": domain,
                                    "name": body.get("name", ""), "quota": body.get("quota", 3072),
                                    "active": "1" if str(body.get("active", "1")) in ("1", "true") else "0",
                                    "password": body["password"]}
        return [_ok(log, ["mailbox_added", username])]

    def _post_edit_mailbox(self, body):
        out = []
        attr = dict(body["attr"])
        for username in body["items"]:
            log = ["mailbox", "edit", "mailbox", {"username": username}, None]
            if username not in self.mailboxes:
                out.append(_danger(log, "access_denied"))
                continue
            if "password" in attr:
                if attr["password"] != attr.get("password2"):
                    out.append(_danger(log, "password_mismatch"))
                    continue
                self.mailboxes[username]["password"] = attr["password"]
            self.mailboxes[username].update({k: v for k, v in attr.items() if k in ("name", "quota", "active")})
            out.append(_ok(log, ["mailbox_modified", username]))
        return out

    def _post_delete_mailbox(self, body):
        out = []
        for username in body:
            log = ["mailbox", "delete", "mailbox", {"username": username}, None]
            if self.mailboxes.pop(username, None) is None:
                out.append(_danger(log, "access_denied"))
            else:
                out.append(_ok(log, ["mailbox_removed", username]))
        return out

    def _get_get_alias(self, arg, _body):
        chosen = self.aliases.values() if arg == "all" else [a for a in self.aliases.values() if str(a["id"]) == arg]
        return [{"active": a["active"], "address": a["address"], "domain": a["address"].split("@")[1],
                 "goto": a["goto"], "id": a["id"], "is_catch_all": 0} for a in chosen]

    def _post_add_alias(self, body):
        log = ["mailbox", "add", "alias", body, None]
        address = str(body.get("address", "")).lower()
        domain = address.split("@")[-1]
        gotos = [g.strip() for g in str(body.get("goto", "")).split(",") if g.strip()]
        if not gotos:
            return [_danger(log, "goto_empty")]
        for goto in gotos:
            if not _EMAIL.match(goto):
                return [_danger(log, ["goto_invalid", goto])]
        if any(a["address"] == address for a in self.aliases.values()) or address in self.mailboxes:
            return [_danger(log, ["is_alias_or_mailbox", address])]
        if domain not in self.domains:
            return [_danger(log, ["domain_not_found", domain])]
        if not _EMAIL.match(address):
            return [_danger(log, ["alias_invalid", address])]
        self.aliases[self._next_alias] = {"id": self._next_alias, "address": address, "goto": ",".join(gotos),
                                          "active": "1" if str(body.get("active", "1")) in ("1", "true") else "0"}
        self._next_alias += 1
        return [_ok(log, ["alias_added", address])]

    def _post_edit_alias(self, body):
        out = []
        for alias_id in body["items"]:
            log = ["mailbox", "edit", "alias", body, None]
            alias = self.aliases.get(int(alias_id))
            if alias is None:
                out.append(_danger(log, "access_denied"))
                continue
            alias.update({k: v for k, v in body["attr"].items() if k in ("goto", "active")})
            out.append(_ok(log, ["alias_modified", alias["address"]]))
        return out

    def _post_delete_alias(self, body):
        out = []
        for alias_id in body:
            alias = self.aliases.pop(int(alias_id), None)
            log = ["mailbox", "delete", "alias", {"id": body}, None]
            out.append(_ok(log, ["alias_removed", alias["address"]]) if alias else _danger(log, "access_denied"))
        return out

    def _get_get_dkim(self, arg, _body):
        key = self.dkim.get(arg)
        if key is None:
            return []
        txt = f"v=DKIM1;k=rsa;t=s;s=email;p={key['pubkey']}"
        if self.split_dkim:
            txt = '"' + '" "'.join(txt[i:i + 255] for i in range(0, len(txt), 255)) + '"'
        return {"dkim_selector": key["selector"], "dkim_txt": txt, "length": str(key["length"]), "privkey": "",
                "pubkey": key["pubkey"]}

    def _post_add_dkim(self, body):
        log = ["dkim", "add", body]
        selector = str(body.get("dkim_selector") or "dkim")
        out = []
        selector_ok = selector.replace("-", "").replace("_", "").isalnum()
        for listed in str(body.get("domains", "")).split(","):
            domain = listed.strip()
            if not _DOMAIN.match(domain) or domain in self.dkim or not selector_ok:
                out.append(_danger(log, ["dkim_domain_or_sel_invalid", domain]))
                continue
            if int(body.get("key_size", 2048)) not in (1024, 2048, 3072, 4096):
                out.append(_danger(log, ["dkim_domain_or_sel_invalid", domain]))
                continue
            self.dkim[domain] = self.make_key(selector, int(body.get("key_size", 2048)))
            out.append(_ok(log, ["dkim_added", domain]))
        return out

    def _post_delete_dkim(self, body):
        out = []
        for domain in body:
            self.dkim.pop(domain, None)
            out.append(_ok(["dkim", "delete", {"domains": domain}], ["dkim_removed", domain]))
        return out

    @staticmethod
    def make_key(selector: str, bits: int) -> dict:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"selector": selector, "length": bits, "pubkey": base64.b64encode(der).decode(), "private": private}


if __name__ == "__main__":  # in a lab guest: the API on <address>:<port>, the key from the environment
    import os
    import sys

    address, port = sys.argv[1], int(sys.argv[2])
    double = MailcowDouble(os.environ["MAILCOW_DOUBLE_KEY"], host=address, allow_from=(address,), port=port)
    double.server.serve_forever()
