"""``pg_role.present`` against a PostgreSQL 15 cluster started by the test, its passwords in a real
OpenBao: applied directly and after a dry run, the server checked each time (an application logs
in over TCP with the password from Vault)."""

from __future__ import annotations

import secrets

import pytest

from tests.states.conftest import converges, unique

pytestmark = pytest.mark.functional


def password_in_vault(bao, path: str) -> str:
    value = secrets.token_urlsafe(24)
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"password": value})
    return value


def present(caller, role: str, path: str, **kwargs):
    return lambda test: caller.state("pg_role.present", role, test=test, password_path=path, **kwargs)


def test_a_new_role_logs_in_with_its_password_from_vault(pg_caller, postgres, bao, testmode):
    role = unique("app")
    path = f"roles/postgresql/users/{role}"
    password = password_in_vault(bao, path)
    rets = converges(present(pg_caller, role, path), lambda: postgres.logs_in(role, password),
                     {"role": "created"}, testmode, secret_values=(password,))
    assert postgres.role(role) == {"login": True, "member_of": []}
    assert rets[-1]["comment"] == f"role {role} is as declared; its password matches secret/data/{path}"


def test_a_password_changed_in_vault_is_set_without_a_restart(pg_caller, postgres, bao, testmode):
    role = unique("app")
    path = f"roles/postgresql/users/{role}"
    old = password_in_vault(bao, path)
    assert pg_caller.state("pg_role.present", role, password_path=path)["result"] is True
    server = postgres.pid
    new = password_in_vault(bao, path)
    converges(present(pg_caller, role, path), lambda: postgres.logs_in(role, new), {"password": "changed"}, testmode,
              secret_values=(old, new))
    assert not postgres.logs_in(role, old), "the old password still works"
    assert postgres.pid == server, "the server was restarted"


def test_login_and_group_membership_follow_the_declaration(pg_caller, postgres, bao, testmode):
    role, group = unique("app"), unique("readers")
    path = f"roles/postgresql/users/{role}"
    password = password_in_vault(bao, path)
    postgres.sql("SELECT format('CREATE ROLE %I NOLOGIN', :'group_name') \\gexec", group_name=group)
    assert pg_caller.state("pg_role.present", role, password_path=path)["result"] is True
    declared = {"login": False, "member_of": [group]}
    converges(present(pg_caller, role, path, **declared), lambda: postgres.role(role) == declared,
              {"login": {"old": True, "new": False}, "member_of": [group]}, testmode, secret_values=(password,))
    assert not postgres.logs_in(role, password)


def test_a_secret_missing_from_vault_fails_and_leaves_the_server_alone(pg_caller, postgres, testmode):
    role = unique("app")
    path = f"roles/postgresql/users/{role}"
    ret = pg_caller.state("pg_role.present", role, test=testmode, password_path=path)
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"].startswith(f"role {role}: secret/data/{path}: no such secret"), ret["comment"]
    assert ret["comment"].endswith("; the role was not changed")
    assert postgres.role(role) is None


def database(postgres, name: str) -> dict | None:
    """The database as the server has it: owner and what PUBLIC may do, or None."""
    row = postgres.sql("SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT'), "
                       "has_database_privilege('public', datname, 'TEMPORARY') FROM pg_database "
                       "WHERE datname = :'db_name';", db_name=name)
    if not row:
        return None
    owner, connect, temporary = row.split("|")
    return {"owner": owner, "public_connect": connect == "t", "public_temporary": temporary == "t"}


def test_a_database_is_created_for_its_owner_and_public_may_not_connect(pg_caller, postgres, testmode):
    owner, name = unique("owner"), unique("db")
    postgres.sql("SELECT format('CREATE ROLE %I LOGIN', :'role_name') \\gexec", role_name=owner)
    wanted = {"owner": owner, "public_connect": False, "public_temporary": False}
    converges(lambda test: pg_caller.state("pg_role.database_present", name, test=test, owner=owner),
              lambda: database(postgres, name) == wanted,
              {"database": "created", "public": ["CONNECT", "TEMPORARY"]}, testmode)


def test_a_database_given_to_another_role_and_opened_to_public_is_taken_back(pg_caller, postgres, testmode):
    owner, other, name = unique("owner"), unique("other"), unique("db")
    for role in (owner, other):
        postgres.sql("SELECT format('CREATE ROLE %I LOGIN', :'role_name') \\gexec", role_name=role)
    assert pg_caller.state("pg_role.database_present", name, owner=owner)["result"] is True
    postgres.sql("SELECT format('ALTER DATABASE %I OWNER TO %I', :'db_name', :'role_name') \\gexec",
                 db_name=name, role_name=other)
    postgres.sql("SELECT format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', :'db_name') \\gexec", db_name=name)
    wanted = {"owner": owner, "public_connect": False, "public_temporary": False}
    ret = converges(lambda test: pg_caller.state("pg_role.database_present", name, test=test, owner=owner),
                    lambda: database(postgres, name) == wanted,
                    {"owner": {"old": other, "new": owner}, "public": ["TEMPORARY"]}, testmode)
    assert ret[-1]["comment"] == f"database {name} exists, owned by {owner}; PUBLIC may not connect to it"
