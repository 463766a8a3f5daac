"""The chat role's scratch lab, for its lab test and its benchmark: PostgreSQL and RabbitMQ guests
converged by their roles, the chat guest built from a git repository of the example service that the
gateway serves over git's HTTP protocol to requests carrying a deploy token kept in Vault, and,
when asked, a reverse proxy with a route to it and certificates from a pebble on the gateway."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.chat.gotool import APP
from tests.openbao import free_port
from tests.scratchlab import GATEWAY, guest_ip, guest_pillar, scratch_site

DB, MQ, CHAT, PROXY = "postgresql", "rabbitmq", "microservices", "reverse-proxy"
DOMAIN = "your-domain.com"
FQDN = f"chat.{DOMAIN}"


def site(pebble=None) -> dict:
    """The chat guest and the data tier; with ``pebble`` (a started Pebble), a reverse proxy with the
    route chat.<domain> and certificates from it."""
    guests = {DB: {"host": 103, "roles": ["postgresql"]},
              MQ: {"host": 105, "roles": ["rabbitmq"]},
              CHAT: {"host": 101, "roles": ["chat"], "uses": [DB, MQ]}}
    sections = {}
    if pebble is not None:
        guests[PROXY] = {"host": 100, "roles": ["reverse_proxy"]}
        sections = {"network": {"nameservers": [GATEWAY]}, "domain": DOMAIN,
                    "routes": {"chat": {"guest": CHAT, "port": 8080, "websocket": True, "timeout": 3600}},
                    "acme": {"directory": pebble.directory, "email": f"hostmaster@{DOMAIN}",
                             "ca_bundle": pebble.tls_cert.read_text()}}
    return scratch_site(
        guests, network=sections.pop("network", None),
        databases={"chat": {"clients": [CHAT]}},
        messaging={"vhosts": ["chat"], "users": {"chat": {"clients": [CHAT], "permissions": {
            "chat": {"configure": ".*", "write": ".*", "read": ".*"}}}}},
        **sections)


SITE = site()
CHAT_IP = guest_ip(SITE, CHAT)
GIT_TOKEN_PATH = "roles/chat/git"  # noqa: S105 (a path, not a token)
# The chat guest's token: its own role's secrets and the credentials the site grants it, nothing else.
CHAT_POLICY = """
path "secret/data/roles/chat/*" { capabilities = ["read"] }
path "secret/data/roles/postgresql/users/chat" { capabilities = ["read"] }
path "secret/data/roles/rabbitmq/users/chat" { capabilities = ["read"] }
"""


# ------------------------------------------------------------------ the owner's git server

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@lab", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_repository(root: Path) -> tuple[Path, dict[str, str]]:
    """A bare repository of the example service with four tags: v1, v2 (a new commit), broken (does
    not compile) and unhealthy (its /healthz always fails). Returns its path and tag -> commit."""
    work = root / "work"
    shutil.copytree(APP, work)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "chat v1")
    git(work, "tag", "v1")
    (work / "CHANGES").write_text("v2: a new release\n")
    main = (work / "main.go").read_text()
    (work / "main.go").write_text(main + "\n// v2: the main package changes, so it is recompiled.\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "chat v2")
    git(work, "tag", "v2")
    (work / "broken.go").write_text("package main\n\nfunc broken() { undefinedFunction() }\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "does not build")
    git(work, "tag", "broken")
    git(work, "reset", "-q", "--hard", "v2")
    app = (work / "app.go").read_text()
    assert 'check("rabbitmq", a.Broker.Healthy())' in app
    never = app.replace('check("rabbitmq", a.Broker.Healthy())', 'check("rabbitmq", errBrokerDown)')
    (work / "app.go").write_text(never)
    git(work, "commit", "-qam", "never healthy")
    git(work, "tag", "unhealthy")
    bare = root / "chat.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
    tags = {tag: git(work, "rev-parse", f"{tag}^{{commit}}") for tag in ("v1", "v2", "broken", "unhealthy")}
    return bare, tags


class GitServer:
    """git's "dumb" HTTP protocol over ``root`` on the gateway, answering only requests that carry the
    token as HTTP Basic credentials (as GitLab takes a deploy token); it records who asked."""

    def __init__(self, root: Path, token: str):
        expected = "Basic " + base64.b64encode(f"oauth2:{token}".encode()).decode()
        requests_seen = self.requests = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                authorized = self.headers.get("Authorization") == expected
                requests_seen.append((self.path, authorized))
                if not authorized:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((GATEWAY, free_port()), partial(Handler, directory=str(root)))
        self.url = f"http://{GATEWAY}:{self.server.server_address[1]}/chat.git"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the lab

class ChatLab:
    def __init__(self, lab, site_data, repo_tags, git_server, token):
        self.lab, self.site, self.tags, self.git, self.token = lab, site_data, repo_tags, git_server, token
        self.first = self.second = None

    def pillar(self, ref: str | None) -> dict:
        """The chat guest's pillar building ``ref`` of the git repository; None: the role's default source
        (the example service shipped with the state tree)."""
        settings = {"health": {"timeout": 15}, "credentials_wait": {"attempts": 2, "interval": 5}}
        if ref is not None:
            settings["source"] = {"git": {"url": self.git.url, "ref": ref, "token": f"vault:{GIT_TOKEN_PATH}#token"}}
        return guest_pillar(self.site, CHAT, {"chat": settings})

    def apply(self, ref: str | None, test: bool = False):
        self.lab.set_pillar(CHAT, self.pillar(ref))
        return self.lab.apply(CHAT, "chat", test=test)

    def sh(self, script: str, guest: str = CHAT) -> str:
        return self.lab.sh(guest, script).stdout.strip()

    def current(self) -> str:
        return self.sh("basename \"$(readlink /opt/chat/current)\"")

    def pid(self) -> str:
        return self.sh("systemctl show -p MainPID --value chat.service")

    def release(self, tag: str) -> str:
        return self.tags[tag][:12]




def start(lab, workdir: Path, proxy_pebble=None) -> ChatLab:
    """The guests up, the data tier converged, the chat guest applied twice at v1 (``first``,
    ``second``); with ``proxy_pebble`` (a started Pebble), the reverse proxy converged too. The
    caller stops ``git`` (the git server) when done."""
    site_data = site(proxy_pebble)
    bare_root = workdir / "git"
    bare_root.mkdir(parents=True, exist_ok=True)
    _, tags = make_repository(bare_root)
    token = secrets.token_urlsafe(24)
    server = GitServer(bare_root, token)
    guests = [DB, MQ, CHAT] + ([PROXY] if proxy_pebble else [])
    lab.start_guests(site_data, *guests)
    bao = lab.start_vault()
    bao.write(GIT_TOKEN_PATH, token=token)
    bao.policy("chat_guest", CHAT_POLICY)
    state = ChatLab(lab, site_data, tags, server, token)
    try:
        t0 = time.monotonic()
        lab.push_salt(DB, guest_pillar(site_data, DB), vault_token=bao.root_token)
        lab.push_salt(MQ, guest_pillar(site_data, MQ), vault_token=bao.root_token)
        jobs = [(DB, "postgresql"), (MQ, "rabbitmq")]
        if proxy_pebble:
            lab.push_salt(PROXY, guest_pillar(site_data, PROXY))
            jobs.append((PROXY, "reverse_proxy"))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for done in [pool.submit(lab.apply, guest, sls) for guest, sls in jobs]:
                assert not done.result().failed, done.result().failed
        state.data_tier_seconds = round(time.monotonic() - t0, 1)
        lab.push_salt(CHAT, state.pillar("v1"), vault_token=bao.token(["chat_guest"]))
        state.first = state.apply("v1")
        state.second = state.apply("v1")
    except BaseException:
        server.stop()
        raise
    return state
