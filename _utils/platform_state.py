"""
The skeleton of this tree's custom states (``_states/``), written once.

Every custom state reads what is, works out what differs (``changes``, old/new, never a secret
value), and then ends the same way: nothing differs, so it says so; ``test=True``, so it says what
it would do with ``result: None`` and writes nothing; otherwise it writes and says what it did. A
``CommandExecutionError`` at any step fails the state with the server's own message and reports
no change.

State modules call these functions as ``__utils__["platform_state.<function>"]``. Minions get this
module with the other custom modules (``salt://_utils``, ``saltutil.sync_all``), the master and the
masterless caller of ``sitectl`` through ``utils_dirs`` (``etc/master.j2``, ``etc/minion.j2``). The
test mode is passed in by the state (its ``__opts__["test"]``): a utility module's own ``__opts__``
is the minion's, not the state run's.
"""

from salt.exceptions import CommandExecutionError


def new(name):
    """The return of a state about ``name`` before anything is known."""
    return {"name": name, "result": True, "comment": "", "changes": {}}


def failed(ret, reason):
    """``ret`` failed because of ``reason`` (a sentence or an exception); nothing was changed."""
    ret["result"] = False
    ret["comment"] = str(reason)
    ret["changes"] = {}
    return ret


def converge(ret, test, changes, *, unchanged, planned, apply, done, failure=""):
    """
    The end of a state once ``changes`` (what differs, without secret values) is known.

    - no ``changes``: ``result: True`` with the comment ``unchanged``;
    - ``test``: ``result: None``, the ``changes`` and the comment ``planned``; nothing is written;
    - else ``apply()`` writes. ``done`` is the comment afterwards, or, when what was done is known
      only from what ``apply()`` returned, a function of that return giving ``(comment, changes)``.

    A ``CommandExecutionError`` from ``apply()`` fails the state with ``failure`` followed by its
    message, and no changes.
    """
    if not changes:
        ret["comment"] = unchanged
        return ret
    ret["changes"] = changes
    if test:
        ret["result"] = None
        ret["comment"] = planned
        return ret
    try:
        outcome = apply()
    except CommandExecutionError as exc:
        return failed(ret, f"{failure}{exc}")
    if callable(done):
        ret["comment"], ret["changes"] = done(outcome)
    else:
        ret["comment"] = done
    return ret


# ---------------------------------------------------------------- one read per state run
#
# A custom state asks its execution module what is (a server's roles, a broker's users) before
# deciding; a highstate with many such states would ask the server once per state. The execution
# module keeps the answer in the state run's context instead: its states open the cache first
# (``cache_open``), each read goes through ``cached``, every write drops it (``cache_drop``) so the
# next read asks the server again. A state run works on its own copy of the minion's context, so
# nothing kept here outlives the run; outside a state run (no cache opened) every read asks.
# The execution module passes its own ``__context__`` (a utility module's is not the caller's).


def cache_open(context, name):
    """Keep reads under ``name`` for the rest of this state run."""
    context.setdefault(name, {})
    return True


def cache_drop(context, name):
    """Forget every read under ``name`` (after a write)."""
    cache = context.get(name)
    if cache is not None:
        cache.clear()


def cached(context, name, key, read):
    """``read()``, or what it returned earlier in this state run for ``key``."""
    cache = context.get(name)
    if cache is not None and key in cache:
        return cache[key]
    value = read()
    if cache is not None:
        cache[key] = value
    return value
