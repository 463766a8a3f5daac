"""
``service.running`` and ``service.enabled`` with a fast no-op (``_modules/unit.py``): every
role's services.

.. code-block:: yaml

    nginx-running:
      unit.running:
        - name: nginx
        - enable: true
        - reload: true          # on a watched change: reload, not restart
        - watch:
          - file: nginx-config

When systemd says the unit is loaded, active, enabled as asked (or ``enable`` not given) and its
unit file unchanged on disk (no daemon-reload pending), the state is done after one
``systemctl show``. In every other case, and for every argument beyond ``enable`` (``unmask``,
``sig``, ``timeout``...), it is Salt's own ``service.running`` with the same arguments, and a
watched change is Salt's own ``service.mod_watch``: starting, enabling, daemon-reload, restart and
reload behave exactly as Salt's. Only the no-op is cheaper.
"""

from salt.exceptions import CommandExecutionError

# `systemctl is-enabled` exits 0 for these (what Salt's service.enabled checks)
ENABLED = {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated"}
DISABLED = {"disabled"}
# arguments that do not change what the no-op checks (reload, full_restart, force: mod_watch's;
# init_delay: a wait after a start)
FAST_ARGS = {"reload", "full_restart", "init_delay", "force"}


def _show(name):
    """systemd's view of the unit, or None (no systemd here, or systemctl failed): Salt's state decides."""
    if "unit.show" not in __salt__:
        return None
    try:
        return __salt__["unit.show"](name)
    except CommandExecutionError:
        return None


def running(name, enable=None, **kwargs):
    """The unit ``name`` runs (and is enabled or disabled as ``enable`` says)."""
    if isinstance(enable, str):
        enable = enable.strip().lower() in ("true", "yes", "1", "on")
    own = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    if set(own) <= FAST_ARGS:
        unit = _show(name)
        if unit and unit["LoadState"] == "loaded" and unit["ActiveState"] == "active" \
                and unit["NeedDaemonReload"] == "no" \
                and (enable is None or unit["UnitFileState"] in (ENABLED if enable else DISABLED)):
            state = "" if enable is None else f", {unit['UnitFileState']}"
            return {"name": name, "result": True, "changes": {},
                    "comment": f"The service {name} is already running{state}"}
    return __states__["service.running"](name, enable=enable, **own)


def enabled(name, **kwargs):
    """The unit ``name`` starts at boot: one ``systemctl show`` when it does, Salt's own
    ``service.enabled`` (with the same arguments) otherwise."""
    own = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    if not own:
        unit = _show(name)
        if unit and unit["LoadState"] == "loaded" and unit["UnitFileState"] in ENABLED:
            return {"name": name, "result": True, "changes": {},
                    "comment": f"Service {name} is already enabled, and is in the desired state"}
    return __states__["service.enabled"](name, **own)


def mod_watch(name, sfun=None, **kwargs):
    """A watched state changed: Salt's ``service.mod_watch`` (restart, or reload with ``reload``)."""
    return __states__["service.mod_watch"](name, sfun="running", **kwargs)
