"""The example chat service's own Go tests, built offline against Debian's Go libraries: the unit
tests (in-memory store and broker), then the integration test against a real PostgreSQL 15 and a
real RabbitMQ started here on loopback (tests/states' servers): two instances share a room through
the broker, the message is in the database, health fails without the broker and recovers."""

from __future__ import annotations

import secrets

import pytest

from tests.chat.gotool import go, missing_packages
from tests.states.conftest import PG_BIN, PostgresCluster, RabbitNode

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def gocache(tmp_path_factory):
    missing = missing_packages()
    if missing:
        pytest.fail(f"Debian packages missing (make setup installs them): {' '.join(missing)}")
    return tmp_path_factory.mktemp("gocache")


def test_the_service_builds_offline_and_vets_clean(gocache):
    vet = go(gocache, "vet", ".")
    assert vet.returncode == 0, vet.stderr
    built = go(gocache, "build", "-o", str(gocache / "chat"), ".")
    assert built.returncode == 0, built.stderr


def test_unit_tests_pass(gocache):
    cp = go(gocache, "test", "-count=1", "-v", "-run", "^Test[^I]", ".")
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr[-2000:]
    assert "--- FAIL" not in cp.stdout and cp.stdout.count("--- PASS") >= 9


def test_integration_against_real_postgresql_and_rabbitmq(gocache, tmp_path):
    pg = PostgresCluster().start()
    node = RabbitNode(tmp_path / "rabbitmq")
    try:
        node.start()
        password = secrets.token_hex(16)
        pg.sql("CREATE ROLE chat LOGIN PASSWORD :'pw'; CREATE DATABASE chat OWNER chat;", pw=password)
        node.ctl("add_vhost", "chat")
        node.ctl("add_user", "chat", stdin=password)
        node.ctl("set_permissions", "-p", "chat", "chat", ".*", ".*", ".*")
        env = {"CHAT_TEST_POSTGRES": "1", "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGDATABASE": "chat",
               "PGUSER": "chat", "PGPASSWORD": password, "PGSSLMODE": "disable",
               "CHAT_TEST_AMQP_URI": f"amqp://chat:{password}@127.0.0.1:{node.amqp_port}/chat"}
        cp = go(gocache, "test", "-count=1", "-v", "-run", "^TestIntegration", ".", env=env)
        assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr[-2000:]
        assert "--- PASS: TestIntegration" in cp.stdout, cp.stdout
        stored = pg._as_postgres(str(PG_BIN / "psql"), "-XAtq", f"--host={pg.dir}", f"--port={pg.port}",
                                 "--dbname=chat", "-c", "SELECT count(*) FROM messages WHERE body = 'across instances'")
        assert stored.stdout.strip() == "1", "the message is in the service's database"
    finally:
        node.stop()
        pg.stop()
