"""The ``jinja`` renderer of this tree: Salt's own, with each template compiled once per content.

Salt renders every SLS in a new Jinja environment, so a file imported by ten SLS (a role's
``map.jinja``, ``lib/platform.jinja``, ``backup/job.jinja``) is parsed, turned into Python and
compiled by Python ten times a run, and every SLS again on every run: 63 compiles and about 0.8 s
of nextcloud's 3 s no-op (issue 21). Here the environment compiles through ``_CompiledOnce``:
the code object of a template is kept under the SHA-256 of everything it is made from (its exact
source text, its name and file name, the Jinja and Python versions and this environment's fixed
settings), in memory for the run and as a marshal file under ``<cachedir>/platform-jinja`` for
the next runs. A changed byte is a new key, so a template is never run from stale code; only the
compile is saved, the rendering itself (pillar, grains, every ``salt[...]`` call) runs each time.
And an imported file is asked of the master once a state run (``_fetched``), not once per SLS that
imports it (about 35 fewer requests a run on nextcloud).

Everything else is Salt's (``salt.utils.templates``): the context (``sls``, ``tpldir``...), the
file client loader, the filters, tests and globals, the error handling. The renderer does its own
work only in Salt's default configuration. With any of Salt's Jinja options set (``jinja_env``,
``jinja_sls_env``, ``allow_undefined``, ``jinja_trim_blocks``, ``jinja_lstrip_blocks``), a
``#jinja2:`` header, or no salt environment, the template is Salt's own ``render_jinja_tmpl``, and
so is any template that fails here: Salt renders it again to raise its own error, with its line
numbers and context (a failing template's side effects, if it has any, may run twice).

Synced to the minions with the other extension modules (``salt://_renderers``); a minion that has
not synced yet renders with Salt's renderer of the same name. The render tier's masterless minion
loads it (``render_dirs``). tests/render/test_jinja_renderer.py checks the compiled code kept and
the files fetched; tests/render/test_discovery.py that every SLS renders for every guest of the
example site exactly as through Salt's renderer.
"""

import collections
import hashlib
import logging
import marshal
import os
import sys
import tempfile
import weakref
from io import StringIO

import jinja2
import jinja2.ext
import jinja2.sandbox
import salt.utils.data
import salt.utils.jinja
import salt.utils.stringutils
import salt.utils.templates
from salt.exceptions import SaltRenderError
from salt.loader.context import NamedLoaderContext
from salt.utils.decorators.jinja import JinjaFilter, JinjaGlobal, JinjaTest

log = logging.getLogger(__name__)

# Bumped when the environment below changes in a way that changes the compiled code.
_FORMAT = "1"
_SETTINGS = "|".join((_FORMAT, jinja2.__version__, sys.version, "sandboxed", "strict-undefined",
                      "do", "loopcontrols", "serializer"))
# Entries kept on disk; the oldest go when there are more (a template edited many times).
_KEEP = 2000
_memory: dict = {}
_fetched_by_client: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

# Salt options under which this renderer steps aside for Salt's own.
_SALT_OPTIONS = ("jinja_env", "jinja_sls_env", "allow_undefined", "jinja_trim_blocks",
                 "jinja_lstrip_blocks")


def _code_key(source: str, name, filename, defer_init: bool) -> str:
    out = hashlib.sha256()
    for part in (_SETTINGS, repr(name), repr(filename), repr(bool(defer_init)), source):
        data = part.encode("utf-8", "surrogatepass")
        out.update(len(data).to_bytes(8, "big"))
        out.update(data)
    return out.hexdigest()


class _CompiledOnce(jinja2.sandbox.SandboxedEnvironment):
    """Salt's sandboxed environment whose ``compile`` is looked up by content first."""

    code_dir = None

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        if raw or not isinstance(source, str):
            return super().compile(source, name, filename, raw, defer_init)
        key = _code_key(source, name, filename, defer_init)
        code = _memory.get(key)
        if code is None:
            code = _read(self.code_dir, key)
            if code is None:
                code = super().compile(source, name, filename, raw, defer_init)
                _write(self.code_dir, key, code)
            _memory[key] = code
        return code


def _read(code_dir, key):
    if not code_dir:
        return None
    try:
        # Only this renderer writes there (root's cache, the folder made 0700).
        with open(os.path.join(code_dir, key), "rb") as f:
            code = marshal.load(f)  # noqa: S302
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, TypeError) as exc:
        log.debug("Jinja code %s not read (%s): compiled again", key, exc)
        return None
    return code if hasattr(code, "co_code") else None


def _write(code_dir, key, code) -> None:
    if not code_dir:
        return
    try:
        os.makedirs(code_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=code_dir, prefix=".new-")
        try:
            with os.fdopen(fd, "wb") as f:
                marshal.dump(code, f)
            os.replace(tmp, os.path.join(code_dir, key))
        except BaseException:
            os.unlink(tmp)
            raise
        entries = [e for e in os.scandir(code_dir) if not e.name.startswith(".")]
        if len(entries) > _KEEP:
            entries.sort(key=lambda e: e.stat().st_mtime_ns)
            for old in entries[: len(entries) - _KEEP]:
                os.unlink(old.path)
    except OSError as exc:
        # The code is still used for this run; only the next run compiles it again.
        log.debug("Jinja code %s not kept (%s)", key, exc)


def _fetched(client, saltenv, pillar_rend) -> list:
    """The templates already fetched through this file client, for this environment and root (the
    state tree's or the pillar's: the same name is another file there). A state run has one file
    client (salt.state.State), so a file that ten SLS import is asked of the master once a run
    instead of once per SLS (Salt keeps this list per SLS); the next run has a new client and asks
    again."""
    try:
        lists = _fetched_by_client.setdefault(client, {})
    except TypeError:  # a client that cannot be weakly referenced: Salt's own list per SLS
        return []
    return lists.setdefault((saltenv, bool(pillar_rend)), [])


def _own_settings(opts, tmplstr: str) -> bool:
    if any(opts.get(option) for option in _SALT_OPTIONS):
        return False
    head = tmplstr.split("\n", 2)[:2]
    return not any(line.startswith("#jinja2:") for line in head)


def _render_jinja(tmplstr, context, tmplpath=None):
    """Salt's ``render_jinja_tmpl`` for this tree's templates, compiling through ``_CompiledOnce``."""
    opts = context["opts"]
    if isinstance(opts, NamedLoaderContext):
        opts = opts.value()
    if tmplstr and not isinstance(tmplstr, str):
        tmplstr = tmplstr.decode(salt.utils.templates.SLS_ENCODING)
    saltenv = context["saltenv"]
    if not saltenv or not _own_settings(opts, tmplstr):
        return salt.utils.templates.render_jinja_tmpl(tmplstr, context, tmplpath)

    from salt.loader.dunder import __file_client__

    client = context.get("fileclient", __file_client__.value())
    pillar_rend = context.get("_pillar_rend", False)
    loader = salt.utils.jinja.SaltCacheLoader(opts, saltenv, pillar_rend=pillar_rend, _file_client=client)
    if client is not None:
        loader.cached = _fetched(client, saltenv, pillar_rend)
    try:
        env, values = _environment(opts, loader, context)
        try:
            output = env.from_string(tmplstr).render(**values)
        except Exception:  # pylint: disable=broad-except
            # Salt's own rendering raises the error a user of Salt expects, with its line and
            # context. (Only the template's failures: the environment above fails loudly.)
            log.debug("Template failed in the platform jinja renderer; rendered by Salt's",
                      exc_info=True)
            return salt.utils.templates.render_jinja_tmpl(tmplstr, context, tmplpath)
    finally:
        loader.destroy()
    # Jinja drops the template's final newline (Salt puts it back the same way).
    if tmplstr.endswith(os.linesep):
        output += os.linesep
    elif tmplstr.endswith("\n"):
        output += "\n"
    return output


def _environment(opts, loader, context):
    """The environment Salt's ``render_jinja_tmpl`` makes in its default configuration, compiling
    through ``_CompiledOnce``; and the context as Salt passes it (loader values unwrapped, text
    decoded)."""
    env = _CompiledOnce(undefined=jinja2.StrictUndefined, loader=loader,
                        extensions=[jinja2.ext.do, jinja2.ext.loopcontrols,
                                    salt.utils.jinja.SerializerExtension])
    env.code_dir = os.path.join(opts["cachedir"], "platform-jinja")
    indent = env.filters.get("indent")
    env.tests.update(JinjaTest.salt_jinja_tests)
    env.filters.update(JinjaFilter.salt_jinja_filters)
    env.filters["indent"] = indent
    env.globals.update(JinjaGlobal.salt_jinja_globals)
    env.globals["odict"] = collections.OrderedDict
    env.globals["show_full_context"] = salt.utils.jinja.show_full_context
    env.tests["list"] = salt.utils.data.is_list
    values = {}
    for key, given in context.items():
        value = given
        if isinstance(given, NamedLoaderContext):
            value = given.value()
        elif isinstance(given, str):
            try:
                value = salt.utils.stringutils.to_unicode(
                    given, encoding=salt.utils.templates.SLS_ENCODING)
            except UnicodeDecodeError:
                value = salt.utils.data.decode(given)
        values[key] = value
    env.globals.update(values)
    return env, values


_JINJA = salt.utils.templates.wrap_tmpl_func(_render_jinja)


def _module_functions():
    funcs = __salt__
    if isinstance(funcs, NamedLoaderContext) and isinstance(funcs.value(), dict):
        funcs = funcs.value()
    if not isinstance(funcs, dict):
        return funcs
    by_module = dict(funcs)
    for full_name, function in funcs.items():
        module, name = full_name.split(".", 1)
        if module not in by_module:
            by_module[module] = lambda: None
        setattr(by_module[module], name, function)
    return by_module


def render(template_file, saltenv="base", sls="", argline="", context=None, tmplpath=None, **kws):
    """Render ``template_file`` with Jinja, as Salt's ``jinja`` renderer does (``-s``: a string)."""
    from_str = argline == "-s"
    if not from_str and argline:
        raise SaltRenderError(f"Unknown renderer option: {argline}")
    rendered = _JINJA(template_file, to_str=True, salt=_module_functions(), grains=__grains__,
                      opts=__opts__, pillar=__pillar__, saltenv=saltenv, sls=sls, context=context,
                      tmplpath=tmplpath, proxy=__proxy__, from_str=from_str, **kws)
    if not rendered.get("result", False):
        raise SaltRenderError(rendered.get("data", "Unknown render error in jinja renderer"))
    if isinstance(rendered["data"], bytes):
        rendered["data"] = rendered["data"].decode(__salt_system_encoding__)
    return StringIO(rendered["data"])
