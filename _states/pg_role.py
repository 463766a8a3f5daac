"""
A PostgreSQL login role whose password is read from Vault (KV v2) when the state runs.

The password is read inside the state, never passed as an argument: it stays out of the
compiled highstate, Salt's state cache (``sls.p``), ``state.show_sls`` and every log. A failed
read (Vault sealed or unreachable, no such secret, a policy that does not cover it) fails the
state with the path and the cause, and the role keeps its current password.

.. code-block:: yaml

    postgresql-user-nextcloud-present:
      pg_role.present:
        - name: nextcloud
        - password_path: roles/postgresql/users/nextcloud
        - member_of: []
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_role"


def __virtual__():
    if "pg_role.present" not in __salt__ or "vault_server.secret_read" not in __salt__:
        return False, "pg_role needs the pg_role and vault_server execution modules"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def present(name, password_path, password_field="password", mount="secret", login=True,  # noqa: S107
            member_of=None, runas="postgres"):
    """
    The role ``name`` exists, can log in (``login``), is a member of ``member_of``, and its stored
    SCRAM-SHA-256 verifier matches the password at ``<mount>/data/<password_path>`` field
    ``password_field``. A changed password is set with ALTER ROLE: no restart, open sessions stay.
    """
    ret = __utils__["platform_state.new"](name)
    __salt__["pg_role.run_cache"]()
    member_of = sorted(member_of or [])
    where = f"{mount}/data/{password_path}"
    try:
        password = __salt__["vault_server.secret_read"](password_path, password_field, mount=mount)
        changes = __salt__["pg_role.differences"](name, password, login=login, member_of=member_of, runas=runas)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"role {name}: {exc}; the role was not changed")

    def updated(applied):
        return f"role {name} updated ({', '.join(sorted(applied))}) from {where}", applied

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"role {name} is as declared; its password matches {where}",
        planned=f"role {name} would be updated ({', '.join(sorted(changes))}) from {where}",
        apply=lambda: __salt__["pg_role.present"](name, password, login=login, member_of=member_of, runas=runas),
        done=updated,
        failure=f"role {name}: ",
    )


def database_present(name, owner, runas="postgres"):
    """
    The database ``name`` exists, is owned by ``owner``, and PUBLIC may neither connect to it nor
    create temporary tables in it (a role reaches only the databases it owns, whatever pg_hba.conf
    would let it try). Roles and databases are read in one session per state run.
    """
    ret = __utils__["platform_state.new"](name)
    __salt__["pg_role.run_cache"]()
    try:
        changes = __salt__["pg_role.database_differences"](name, owner, runas=runas)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"database {name}: {exc}; nothing was changed")
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"database {name} exists, owned by {owner}; PUBLIC may not connect to it",
        planned=f"database {name} would be updated ({', '.join(sorted(changes))})",
        apply=lambda: __salt__["pg_role.database_present"](name, owner, runas=runas),
        done=lambda applied: (f"database {name} updated ({', '.join(sorted(applied))})", applied),
        failure=f"database {name}: ",
    )
