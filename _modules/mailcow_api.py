"""
mailcow's HTTP API (``/api/v1``, mailcow-dockerized's published OpenAPI description): mail
domains, mailboxes, aliases and DKIM keys, one call per function.

The API key is read from Vault (``vault_server.secret_read``) on each call and sent only in the
``X-API-Key`` header; mailbox passwords are passed in by the caller (the state read them from
Vault) and sent only in request bodies. Nothing secret is returned or logged.

Settings (minion config ``mailcow_api``; else the pillar ``platform:mail:api`` the master derives
from the site, ``sitectl.roles.mail``; or arguments): ``url`` (mailcow's web server as the guest
reaches it), ``key_path`` / ``key_field`` / ``mount`` (where the read-write key lives in Vault),
``verify``, ``timeout``.

mailcow answers a write with HTTP 200 and a list of ``{type, log, msg}``; ``type`` ``danger`` or
``error`` is a refusal whose ``msg`` names the reason (``domain_not_found``, ``object_exists``,
``domain_exists``, ``is_alias_or_mailbox``, ...): it is raised as ``CommandExecutionError`` in those
words. A refused key is HTTP 401 (``authentication failed``, or ``api access denied for ip ...``
for a source outside ``API_ALLOW_FROM``).
"""

import logging

from salt.exceptions import CommandExecutionError

try:
    import requests

    HAS_REQUESTS = True
except ImportError:
    HAS_REQUESTS = False

log = logging.getLogger(__name__)

__virtualname__ = "mailcow_api"

_MIB = 1024 * 1024


def __virtual__():
    if not HAS_REQUESTS:
        return False, "mailcow_api needs requests"
    return __virtualname__


def _settings(url=None):
    # unmask: Salt 3008 masks pillar values for a call from the command line, the state run included.
    conf = (__salt__["config.get"]("mailcow_api", {})
            or __salt__["pillar.get"]("platform:mail:api", default={}, unmask=True)) or {}
    settings = {
        "url": (url or conf.get("url") or "").rstrip("/"),
        "key_path": conf.get("key_path", "roles/mailcow/api"),
        "key_field": conf.get("key_field", "key"),
        "mount": conf.get("mount", "secret"),
        "verify": conf.get("verify", True),
        "timeout": conf.get("timeout", 60),
    }
    if not settings["url"]:
        raise CommandExecutionError("no mailcow API URL: set mailcow_api:url")
    return settings


def _call(method, path, body=None, url=None):
    conf = _settings(url)
    key = __salt__["vault_server.secret_read"](conf["key_path"], conf["key_field"], mount=conf["mount"])
    where = f"mailcow API {method} /api/v1/{path}"
    try:
        reply = requests.request(method, f"{conf['url']}/api/v1/{path}", json=body, timeout=conf["timeout"],
                                 verify=conf["verify"], headers={"X-API-Key": key, "Accept": "application/json"})
    except requests.exceptions.RequestException as exc:
        raise CommandExecutionError(f"{where}: mailcow is unreachable ({type(exc).__name__})") from None
    try:
        data = reply.json()
    except ValueError:
        raise CommandExecutionError(f"{where}: HTTP {reply.status_code}, not JSON") from None
    if reply.status_code == 401:
        msg = data.get("msg") if isinstance(data, dict) else data
        raise CommandExecutionError(f"{where}: the API key was refused ({msg})")
    if reply.status_code != 200:
        raise CommandExecutionError(f"{where}: HTTP {reply.status_code}")
    if method == "POST":
        answers = data if isinstance(data, list) else [data]
        refused = [a for a in answers if not isinstance(a, dict) or a.get("type") != "success"]
        if refused:
            reasons = "; ".join(_message(a) for a in refused)
            raise CommandExecutionError(f"{where}: refused: {reasons}")
    return data


def _message(answer):
    if not isinstance(answer, dict):
        return repr(answer)
    msg = answer.get("msg")
    return " ".join(str(m) for m in msg) if isinstance(msg, list) else str(msg)


def _flag(value):
    return "1" if value in (True, 1, "1") else "0"


def domains(url=None):
    """
    The mail domains: domain -> {description, active, mailboxes, aliases, quota, maxquota, defquota}
    (counts as mailcow's limits; quotas in MiB, as the add call takes them).

    CLI Example:

    .. code-block:: bash

        salt mailcow mailcow_api.domains
    """
    out = {}
    for item in _call("GET", "get/domain/all", url=url) or []:
        out[item["domain_name"]] = {
            "description": item.get("description") or "",
            "active": _flag(item.get("active")) == "1",
            "mailboxes": int(item["max_num_mboxes_for_domain"]),
            "aliases": int(item["max_num_aliases_for_domain"]),
            "quota": int(item["max_quota_for_domain"]) // _MIB,
            "maxquota": int(item["max_quota_for_mbox"]) // _MIB,
            "defquota": int(item["def_quota_for_mbox"]) // _MIB,
        }
    return out


def _domain_attrs(attrs):
    out = {k: str(v) for k, v in attrs.items() if k in ("description", "mailboxes", "aliases", "quota", "maxquota",
                                                            "defquota")}
    if "active" in attrs:
        out["active"] = _flag(attrs["active"])
    return out


def domain_add(domain, attrs=None, url=None):
    """Add the mail domain ``domain`` with ``attrs`` (description, mailboxes, aliases, quota, maxquota,
    defquota in MiB, active)."""
    _call("POST", "add/domain", {"domain": domain, **_domain_attrs(attrs or {})}, url=url)
    return True


def domain_edit(domain, attrs, url=None):
    """Change ``attrs`` of the mail domain ``domain``."""
    _call("POST", "edit/domain", {"items": [domain], "attr": _domain_attrs(attrs)}, url=url)
    return True


def domain_delete(domain, url=None):
    """Delete the mail domain ``domain`` (mailcow refuses one that still has mailboxes)."""
    _call("POST", "delete/domain", [domain], url=url)
    return True


def mailboxes(url=None):
    """
    The mailboxes: address -> {name, quota (MiB), active}.

    CLI Example:

    .. code-block:: bash

        salt mailcow mailcow_api.mailboxes
    """
    return {item["username"]: {"name": item.get("name") or "", "quota": int(item.get("quota") or 0) // _MIB,
                               "active": _flag(item.get("active")) == "1"}
            for item in _call("GET", "get/mailbox/all", url=url) or []}


def mailbox_add(address, password, name="", quota=3072, active=True, url=None):
    """Add the mailbox ``address`` with ``password`` (sent in the body only)."""
    local_part, _, domain = address.partition("@")
    _call("POST", "add/mailbox", {"local_part": local_part, "domain": domain, "name": name, "quota": str(quota),
                                  "password": password, "password2": password, "active": _flag(active),
                                  "force_pw_update": "0"}, url=url)
    return True


def mailbox_edit(address, attrs, password=None, url=None):
    """Change ``attrs`` (name, quota in MiB, active) of the mailbox ``address``, and its password when
    ``password`` is given."""
    attr = {k: str(v) for k, v in attrs.items() if k in ("name", "quota")}
    if "active" in attrs:
        attr["active"] = _flag(attrs["active"])
    if password is not None:
        attr.update(password=password, password2=password)
    _call("POST", "edit/mailbox", {"items": [address], "attr": attr}, url=url)
    return True


def mailbox_delete(address, url=None):
    """Delete the mailbox ``address`` and its mail."""
    _call("POST", "delete/mailbox", [address], url=url)
    return True


def aliases(url=None):
    """
    The aliases: address -> {id, goto (sorted list), active}.

    CLI Example:

    .. code-block:: bash

        salt mailcow mailcow_api.aliases
    """
    return {item["address"]: {"id": str(item["id"]),
                              "goto": sorted(g.strip() for g in str(item.get("goto") or "").split(",") if g.strip()),
                              "active": _flag(item.get("active")) == "1"}
            for item in _call("GET", "get/alias/all", url=url) or []}


def alias_add(address, goto, active=True, url=None):
    """Add the alias ``address`` delivering to ``goto`` (a list of addresses)."""
    _call("POST", "add/alias", {"address": address, "goto": ",".join(goto), "active": _flag(active)}, url=url)
    return True


def alias_edit(alias_id, attrs, url=None):
    """Change ``attrs`` (goto as a list, active) of the alias with id ``alias_id``."""
    attr = {}
    if "goto" in attrs:
        attr["goto"] = ",".join(attrs["goto"])
    if "active" in attrs:
        attr["active"] = _flag(attrs["active"])
    _call("POST", "edit/alias", {"items": [str(alias_id)], "attr": attr}, url=url)
    return True


def alias_delete(alias_id, url=None):
    """Delete the alias with id ``alias_id``."""
    _call("POST", "delete/alias", [str(alias_id)], url=url)
    return True


def dkim(domain, url=None):
    """
    The DKIM key mailcow signs ``domain``'s mail with: {dkim_selector, dkim_txt, length, pubkey};
    None when it has none. ``dkim_txt`` is one string (mailcow's 255-octet split, when it is on,
    undone): the DNS side splits it again.

    CLI Example:

    .. code-block:: bash

        salt mailcow mailcow_api.dkim example.org
    """
    data = _call("GET", f"get/dkim/{domain}", url=url)
    if not data or not isinstance(data, dict) or not data.get("pubkey"):
        return None
    txt = str(data.get("dkim_txt") or "")
    if txt.startswith('"'):
        txt = "".join(part.strip('"') for part in txt.split('" "'))
    return {"dkim_selector": data.get("dkim_selector") or "dkim", "dkim_txt": txt, "length": str(data.get("length")),
            "pubkey": data["pubkey"]}


def dkim_add(domain, selector="dkim", key_size=2048, url=None):
    """Have mailcow generate a DKIM key for ``domain`` (refused when it has one)."""
    _call("POST", "add/dkim", {"domains": domain, "dkim_selector": selector, "key_size": str(key_size)}, url=url)
    return True


def dkim_delete(domain, url=None):
    """Delete ``domain``'s DKIM key (its DNS record goes with the next DNS run)."""
    _call("POST", "delete/dkim", [domain], url=url)
    return True
