"""A double of GitLab's runner API, on loopback, following GitLab's REST API description of the
Runners API ("doc/api/runners.md": *Create a runner* with a registration token (deprecated),
*Delete a runner by authentication token*, *Verify authentication for a registered runner*):

- ``POST /api/v4/runners``: ``token`` (a registration token, required), ``description``, ``info``,
  ``paused``, ``locked``, ``run_untagged``, ``tag_list``, ``access_level``, ``maximum_timeout``,
  ``maintenance_note``; 201 ``{id, token, token_expires_at}``; 403 for an unknown token; 410 when
  the instance has registration tokens disabled (GitLab's default from 17.0; this double: always,
  unless ``registration_tokens`` holds one);
- ``DELETE /api/v4/runners``: ``token`` (the runner's authentication token, required); 204; 403;
- ``POST /api/v4/runners/verify``: ``token`` (required), ``system_id``; 200 ``{id, token,
  token_expires_at}``; 403.

A missing required parameter is GitLab's 400 ``{"error": "token is missing"}``; bodies are accepted
as form data or JSON, as GitLab does. Every request is recorded (method, path, parameters) so a
test can say what a client sent. This is a double: the role's registration is verified against it
(L2), never against a real GitLab from here.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATE_PARAMS = {"token", "description", "info", "paused", "locked", "run_untagged", "tag_list", "access_level",
                 "maximum_timeout", "maintenance_note"}


class GitLabRunnerApi:
    def __init__(self):
        self.runners: dict[str, dict] = {}  # authentication token -> {id, system_ids, description}
        self.registration_tokens: set[str] = set()
        self.requests: list[tuple[str, str, dict]] = []
        self._ids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def create_runner(self, description: str = "") -> str:
        """What an operator does in GitLab's UI (New project runner): a runner and its glrt- token."""
        token = "glrt-" + secrets.token_urlsafe(15)
        self.runners[token] = {"id": next(self._ids), "system_ids": set(), "description": description}
        return token

    def start(self) -> GitLabRunnerApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _verify(self, params: dict) -> tuple[int, dict | None]:
        runner = self.runners.get(params["token"])
        if runner is None:
            return 403, {"message": "403 Forbidden"}
        if params.get("system_id"):
            runner["system_ids"].add(params["system_id"])
        return 200, {"id": runner["id"], "token": params["token"], "token_expires_at": None}

    def _delete(self, params: dict) -> tuple[int, dict | None]:
        if self.runners.pop(params["token"], None) is None:
            return 403, {"message": "403 Forbidden"}
        return 204, None

    def _create(self, params: dict) -> tuple[int, dict | None]:
        unknown = set(params) - CREATE_PARAMS
        if unknown:
            return 400, {"error": f"{sorted(unknown)[0]} does not have a valid value"}
        if not self.registration_tokens:
            return 410, {"message": "410 Gone"}
        if params["token"] not in self.registration_tokens:
            return 403, {"message": "403 Forbidden"}
        new = self.create_runner(params.get("description", ""))
        return 201, {"id": self.runners[new]["id"], "token": new, "token_expires_at": None}

    def answer(self, method: str, path: str, params: dict) -> tuple[int, dict | None]:
        """GitLab's answer to one request: (status, JSON body or None)."""
        route = {("POST", "/api/v4/runners/verify"): self._verify, ("DELETE", "/api/v4/runners"): self._delete,
                 ("POST", "/api/v4/runners"): self._create}.get((method, path))
        if route is None:
            return 404, {"message": "404 Not Found"}
        if not params.get("token"):
            return 400, {"error": "token is missing"}
        return route(params)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _params(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if "json" in (self.headers.get("Content-Type") or ""):
                    return {**query, **(json.loads(raw or "{}"))}
                return {**query, **dict(urllib.parse.parse_qsl(raw))}

            def _send(self, status: int, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                path = urllib.parse.urlsplit(self.path).path
                params = self._params()
                api.requests.append((method, path, params))
                self._send(*api.answer(method, path, params))

            def do_POST(self):  # noqa: N802 - http.server's name
                self._route("POST")

            def do_DELETE(self):  # noqa: N802 - http.server's name
                self._route("DELETE")

            def do_GET(self):  # noqa: N802 - http.server's name
                self._route("GET")

        return Handler
