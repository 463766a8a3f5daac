"""
A large file from the master's file server (``_modules/master_file.py``), compared by one hash:

.. code-block:: yaml

    vault-package-installed:
      master_file.managed:
        - name: /usr/local/bin/bao
        - source: salt://lab/openbao/bao
        - mode: '0755'

The file is replaced when its content differs from the source's (the master's hash against one
hash of the installed file), and its owner, group and mode are set in place when only they differ.
"""

from salt.exceptions import CommandExecutionError


def managed(name, source, user="root", group="root", mode="0644"):
    """``name`` has the content of ``source`` (``salt://``), with its owner, group and mode."""
    ret = __utils__["platform_state.new"](name)
    try:
        expected = __salt__["master_file.source_hash"](source, __env__)
        have = __salt__["master_file.local_hash"](name, expected["hash_type"])
        attributes = __salt__["master_file.attribute_changes"](name, user, group, mode)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    replace = have != expected["hsum"]
    if replace:
        changes = {expected["hash_type"]: {"old": have, "new": expected["hsum"]}}
    else:
        changes = attributes
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{name} is {source} ({expected['hash_type']} {expected['hsum'][:12]}...)",
        planned=(f"{name} would be replaced by {source}" if replace
                 else f"the owner or mode would be set on {name}"),
        apply=lambda: (__salt__["master_file.fetch"](name=name, source=source, expected=expected, user=user,
                                                     group=group, mode=mode, saltenv=__env__) if replace
                       else __salt__["master_file.set_attributes"](name, user, group, mode)),
        done=(f"{name} replaced by {source}" if replace else f"the owner or mode was set on {name}"),
        failure=f"{name}: ",
    )
