"""The site file and the role catalog as data: plain YAML read by the master's ext_pillar, never a template.

A site file (``pillar/site/<site>.sls``) is written by the site's owner. Salt would render it as
Jinja before YAML, as root on the master; here it is loaded as YAML only, so a ``{{ ... }}`` in a
value is a string. The loader is strict where YAML is lenient: a duplicate key, a key that is not a
string, an alias that expands into a huge document, or a file over ``MAX_BYTES`` is refused, and
every refusal names the file, line and column.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

MAX_BYTES = 512 * 1024
# A site of a few dozen guests is a few thousand nodes; aliases may not expand it past this.
MAX_NODES = 100_000
SITE_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


class SiteFileError(ValueError):
    """A site file that is not a YAML mapping the validator can read; the message says where and why."""


_KINDS = {int: "a number", float: "a number", bool: "a boolean (YAML reads yes/no/on/off so)",
          type(None): "null", list: "a list", dict: "a mapping"}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and keys that are not strings, with their position."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                kind = _KINDS.get(type(key), type(key).__name__)
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key_node.value!r} is read as {kind}; expected a string key (quote it: "
                                f"'{key_node.value}')", key_node.start_mark)
            if key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1}, column {first.column + 1}); "
                                f"expected each key once", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (linear: each node is sized once)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[id(node)] = total
    return total


def _where(path: Path, mark) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def load(path: Path, shown: str | None = None) -> dict:
    """The mapping in YAML file ``path``; ``shown`` is how errors name the file."""
    return loads(read(path, shown), shown or path)


def read(path: Path, shown: str | None = None) -> str:
    """The text of file ``path`` (refused when missing or over ``MAX_BYTES``); ``shown`` names it in errors."""
    shown_path = Path(shown or path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise SiteFileError(f"{shown_path}: no such file; expected the site description there") from None
    if size > MAX_BYTES:
        raise SiteFileError(f"{shown_path}: {size} bytes; expected a site file of at most {MAX_BYTES} bytes")
    return path.read_text(encoding="utf-8", errors="replace")


def loads(text: str, shown: Path | str) -> dict:
    """The mapping in YAML ``text`` (a file's content, already size-checked); ``shown`` names it in errors."""
    shown_path = Path(shown)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SiteFileError(f"{shown_path}: empty; expected a YAML mapping (see pillar/site/example.sls)")
        nodes = _expanded_size(node, {})
        if nodes > MAX_NODES:
            raise SiteFileError(f"{_where(shown_path, node.start_mark)}: aliases expand it to {nodes} nodes; expected "
                                f"at most {MAX_NODES} (a site file needs no alias bomb)")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.problem:
            started = exc.context_mark
            context = f" ({exc.context}" + (f" from line {started.line + 1}, column {started.column + 1})"
                                            if started is not None and started is not mark else ")")
        problem = exc.problem or exc.context or "not YAML"
        hint = "; expected spaces, not tabs, for indentation" if "\\t" in problem or "tab" in problem else ""
        raise SiteFileError(f"{_where(shown_path, mark)}: {problem}{context}{hint}") from None
    except yaml.YAMLError as exc:
        raise SiteFileError(f"{shown_path}: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SiteFileError(f"{shown_path}: a YAML {type(data).__name__}; expected a mapping (see "
                            f"pillar/site/example.sls)")
    return data


def site_path(pillar_root: Path, site: str) -> Path:
    if not isinstance(site, str) or not SITE_NAME.match(site):
        raise SiteFileError(f"platform_site: {site!r} is not a site name; expected the name of a file in "
                            f"pillar/site/ (lower case, digits, '-', '_')")
    return pillar_root / "site" / f"{site}.sls"
