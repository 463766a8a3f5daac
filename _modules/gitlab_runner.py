"""
GitLab's runner API, the two calls a runner host makes with a runner authentication token
(GitLab's current registration workflow: the runner is created in GitLab, which shows its
``glrt-`` token once; no registration token is ever used):

- ``POST /api/v4/runners/verify`` (``token``, ``system_id``): is this token valid? GitLab answers
  200 with the runner's ``id``, ``token`` and ``token_expires_at``, or 403;
- ``DELETE /api/v4/runners`` (``token``): unregister the runner; 204, or 403.

Plain data back; a refused or failed call raises ``CommandExecutionError`` with GitLab's own
message. The token goes in the request body only, never in a URL, a log line or a return.
"""

import json
import urllib.error
import urllib.parse
import urllib.request

from salt.exceptions import CommandExecutionError

__virtualname__ = "gitlab_runner"


def __virtual__():
    return __virtualname__


def _call(url, method, path, params, ca_bundle=None, timeout=30):
    import ssl

    body = urllib.parse.urlencode(params).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v4/{path}", data=body, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310
            text = answer.read().decode() or "null"
            return answer.status, json.loads(text)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("message") or json.loads(text).get("error") or text
        except (ValueError, AttributeError):
            message = text
        raise CommandExecutionError(f"{method} /api/v4/{path}: {exc.code} {message}".strip()) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise CommandExecutionError(f"{method} /api/v4/{path}: {url} unreachable: {exc}") from exc


def verify(url, token, system_id=None, ca_bundle=None):
    """
    The runner the authentication token ``token`` belongs to: ``{id, token_expires_at}`` (the token
    itself is not returned). Raises when GitLab refuses the token.

    CLI Example (never with a real token on a command line; the state reads it from Vault):

    .. code-block:: bash

        salt runner gitlab_runner.verify https://gitlab.example.org glrt-...
    """
    params = {"token": token}
    if system_id:
        params["system_id"] = system_id
    _, data = _call(url, "POST", "runners/verify", params, ca_bundle)
    if not isinstance(data, dict) or "id" not in data:
        raise CommandExecutionError(f"POST /api/v4/runners/verify: unexpected answer from {url}")
    return {"id": data["id"], "token_expires_at": data.get("token_expires_at")}


def delete(url, token, ca_bundle=None):
    """Unregister the runner of ``token`` from GitLab (``DELETE /api/v4/runners``); True when done."""
    status, _ = _call(url, "DELETE", "runners", {"token": token}, ca_bundle)
    return status == 204
